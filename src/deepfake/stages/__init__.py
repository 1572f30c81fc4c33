"""Layer 5: the pipeline's stages (explore, extract, train, evaluate), orchestrating the layers below;
each notebook calls one of them."""
