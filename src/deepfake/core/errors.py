"""The one error hierarchy of the kit.

Every error a user can cause derives from :class:`DeepfakeError`, so callers
(the CLI, the HTTP server, the pipeline entry point) can catch one class and
show the message, which always names the input and what to do about it.
"""

from __future__ import annotations


class DeepfakeError(Exception):
    """Base class of every error raised on purpose by the kit."""


class ConfigError(DeepfakeError, ValueError):
    """A stage setting or notebook parameter is unknown or has a bad value."""


class DataError(DeepfakeError):
    """The data cannot serve the stage (a class missing, a split empty, ...)."""


class CatalogError(DataError):
    """A dataset folder does not have the layout its catalog expects."""


class SplitLeakError(DataError):
    """A fake and its source video (or two videos of one source) straddle splits."""

    def __init__(self, message: str, leaks: dict[str, list[str]] | None = None) -> None:
        self.leaks = dict(leaks or {})   # original_id -> the splits it appears in
        super().__init__(message)


class ManifestError(DataError):
    """A manifest is missing, unreadable or lacks required columns."""


class MonitoringError(DataError):
    """Captured traffic, a baseline or ground truth cannot be read or compared (deepfake monitor)."""


class VideoDecodeError(DeepfakeError):
    """A file cannot be opened or decoded as a video (zero frames, truncated, not a video)."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode video {self.path!s}: {reason}")


class ImageDecodeError(DeepfakeError):
    """Bytes or a file cannot be decoded as an image."""


class DetectorError(DeepfakeError):
    """A face detector is unknown or its backend is not installed."""


class ModelError(DeepfakeError):
    """A model artifact is missing, incomplete or was made by an incompatible version."""


class NotebookError(DeepfakeError):
    """A notebook step failed; the executed copy is kept at ``executed_path``."""

    def __init__(self, message: str, *, step: str | None = None, executed_path: object = None,
                 cell: int | None = None, ename: str | None = None) -> None:
        self.step = step
        self.executed_path = None if executed_path is None else str(executed_path)
        self.cell = cell
        self.ename = ename
        super().__init__(message)


class RegistryError(DeepfakeError):
    """A model registry operation is impossible (unknown version, nothing approved, ...)."""


class LockedError(DeepfakeError):
    """A folder is being written by another process (a run, a step, a batch scoring): nothing was changed."""


class QualityGateError(DeepfakeError):
    """An evaluation metric did not reach its threshold."""


class PipelineError(DeepfakeError):
    """The SageMaker pipeline cannot be built or run with the given arguments."""


class DeployError(DeepfakeError):
    """Deployment cannot proceed (no approved package, endpoint not InService, ...)."""


class InvalidInputError(DeepfakeError):
    """A request to the model is malformed; served as HTTP 4xx."""

    status = 400


class UnsupportedContentTypeError(InvalidInputError):
    status = 415


class ForbiddenInputError(InvalidInputError):
    """The request names something this endpoint may not read (an S3 object outside its prefixes)."""

    status = 403


class PayloadTooLargeError(InvalidInputError):
    status = 413
