"""Layer 1: pixels. Videos in (one sequential decoding pass) and out, images, face detectors, square crops,
the one crop path and the one preprocessing path. Serving's whole input side lives here."""
