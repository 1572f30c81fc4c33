"""The kit's fixed vocabularies, defined once and imported everywhere.
"""

from __future__ import annotations

JSON_TYPE = "application/json"


OCTET_STREAM = "application/octet-stream"


# Video content types -> the file suffix FFmpeg gets (it probes the content; the suffix is a hint).
VIDEO_TYPES = {
    "video/mp4": ".mp4",
    "video/x-m4v": ".m4v",
    "video/quicktime": ".mov",
    "video/x-msvideo": ".avi",
    "video/avi": ".avi",
    "video/webm": ".webm",
    "video/x-matroska": ".mkv",
    "video/mpeg": ".mpg",
}


IMAGE_TYPES = ("image/jpeg", "image/png")


ACCEPTED_TYPES = (*VIDEO_TYPES, *IMAGE_TYPES, JSON_TYPE, OCTET_STREAM)


RESPONSE_TYPES = (JSON_TYPE,)


STATUS_OK = "ok"


STATUS_NO_FACE = "no_face"


STATUS_DECODE_ERROR = "decode_error"
