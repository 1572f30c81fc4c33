"""Layer 2: the tables and what is learned from them. Dataset catalogs, grouped splits, manifests, the
faces table, torch datasets, augmentations and self-blended pseudo-fakes."""
