"""Deepfake-video detection, from notebook to SageMaker endpoint."""

import os as _os

# Before torch loads: OpenMP threads that spin while waiting steal the cores that
# video decoding and the other workers need (measured 3-10x slower scoring on 2
# shared cores). A user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
