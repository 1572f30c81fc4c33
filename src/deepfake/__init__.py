"""Deepfake-video detection, from notebook to SageMaker endpoint."""

__version__ = "0.1.0"
