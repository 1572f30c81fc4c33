"""Layer 6: running it all. The step list, notebook execution, the local runner and its cache, the local
model registry and the ``deepfake`` command."""
