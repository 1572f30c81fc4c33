"""Layer 0, imported by every other layer and importing none: errors, settings, paths, files, the fixed
vocabularies, the requirements, the CPU budget and the kit's own import graph."""
