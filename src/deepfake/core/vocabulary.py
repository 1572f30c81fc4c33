"""The kit's fixed vocabularies, defined once and imported everywhere.

A value with a fixed set of meanings (a label, a status, a split, an approval
state, the model group's name, a content type) is spelled here and nowhere
else; every other module, the SageMaker pipeline and the deployment import it.
"""

from __future__ import annotations

# -- labels: integers everywhere inside the kit ------------------------------------------------
REAL = 0
FAKE = 1
LABELS = {"real": REAL, "fake": FAKE}                  # name -> label (catalogs, the model's label map)
LABEL_NAMES = {REAL: "real", FAKE: "fake"}             # label -> name (tables, figures, reports)
RESPONSE_LABELS = {REAL: "REAL", FAKE: "FAKE"}         # label -> the word a served response gives
NO_MANIPULATION = "none"                               # the manipulation of a real video

# -- face extraction: one status per video (faces.csv's ``status``) -----------------------------
STATUS_OK = "ok"                       # faces found and cropped
STATUS_NO_FACE = "no_face"             # decoded, but no face in the sampled frames
STATUS_DECODE_ERROR = "decode_error"   # missing, unreadable or truncated before any sampled frame
STATUS_ERROR = "error"                 # batch scoring only: scoring failed otherwise (its reason says why)

# -- splits ----------------------------------------------------------------------------------------
TRAIN, VAL, TEST = "train", "val", "test"
SPLITS = (TRAIN, VAL, TEST)
ALL_SPLITS = "all"                     # an evaluation of every row, whatever its split

# -- where the training fakes come from (deepfake.stages.train) -----------------------------------
TRAINING_MODES = ("self_blend", "dataset", "both")

# -- the model registry (local and SageMaker): one group name, SageMaker's approval states ----------
MODEL_GROUP = "deepfake-detector"
PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"
APPROVAL_STATUSES = (PENDING, APPROVED, REJECTED)

# -- experiment tracking (MLflow): the experiment where the runs of the model group are compared ----
EXPERIMENT = MODEL_GROUP

# -- what the endpoint accepts and answers -------------------------------------------------------
JSON_TYPE = "application/json"
OCTET_STREAM = "application/octet-stream"
FORM_TYPE = "application/x-www-form-urlencoded"   # what `curl --data-binary` sends without -H: sniffed like none
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


def label_name(label: object) -> str:
    """``real`` / ``fake`` for 0 / 1 (in any numeric or text form), else the value as text."""
    try:
        return LABEL_NAMES[int(float(str(label)))]
    except (KeyError, ValueError):
        return str(label)
