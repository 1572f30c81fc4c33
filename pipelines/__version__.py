"""The pipelines ship with the kit and carry its version."""

from deepfake import __version__

__all__ = ["__version__"]
