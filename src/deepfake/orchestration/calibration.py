"""``deepfake calibrate``: a model recalibrated on a labelled sample of the user's own videos.

The sample is scored exactly as an evaluation-only run scores a dataset
(``deepfake run --model``: exploration, extraction with the model's own settings,
every video through the rule the model serves) with the evaluation notebook's
``recalibrate`` on, so the notebook and the command share one implementation
(:mod:`deepfake.stages.calibrate`). The new model is copied to ``--out``; with
``--register`` it becomes a version of the registry the parent came from, naming
the version it derives from and the sample:

- a local model (a folder or ``model.tar.gz``; a registered one is found by its
  sha256): a new version of the local registry;
- a SageMaker model package (``--model arn:aws:sagemaker:...:model-package/GROUP/N``):
  its ``model.tar.gz`` is downloaded, and the new one is uploaded beside it and
  registered in the same model package group with the parent's inference
  specification, as ``PendingManualApproval``, its customer metadata naming the
  parent package and the sample.
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from deepfake.core import paths
from deepfake.core.dependencies import pip_hint
from deepfake.core.errors import ConfigError, RegistryError
from deepfake.core.files import read_json, sha256_file
from deepfake.core.paths import split_s3
from deepfake.orchestration import steps
from deepfake.orchestration.registry import DEFAULT_GROUP, LocalRegistry
from deepfake.orchestration.runner import run_pipeline
from deepfake.stages.calibrate import RECALIBRATION, recalibrated_paths

PACKAGE_ARN = "model-package/"           # what a SageMaker model package's ARN holds


def calibrate_command(args: argparse.Namespace) -> int:
    run_id = args.run_id or datetime.now().strftime("calibrate-%Y%m%d-%H%M%S")
    package = None
    if PACKAGE_ARN in str(args.model) and str(args.model).startswith("arn:"):
        package = _download_package(str(args.model), paths.runs_dir() / run_id / "parent")
        args.model = package["local"]
    sets = ["evaluate.recalibrate=true", f"evaluate.recalibration={args.method}"]
    if args.target_fpr is not None:
        sets.append(f"evaluate.target_fpr={args.target_fpr}")
    if args.folds is not None:
        sets.append(f"evaluate.recalibration_folds={args.folds}")
    code = run_pipeline(args.data, run_id, "default", sets, model=args.model, register=False)
    if code != 0:
        return code
    evaluate_dir = paths.runs_dir() / run_id / steps.EVALUATION_STEP
    model_dir, archive = recalibrated_paths(evaluate_dir)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty; give a new folder for the recalibrated model "
                          f"(it is kept in {model_dir.parent} too)")
    shutil.copytree(model_dir.parent, out, dirs_exist_ok=True)
    record = read_json(out / RECALIBRATION)
    _say_figures(record, out)
    if args.register and package is not None:
        _register_package(package, record, out / paths.MODEL_ARCHIVE)
    elif args.register:
        _register(args, record, out / paths.MODEL_ARCHIVE)
    return 0


def _say_figures(record: dict[str, Any], out: Path) -> None:
    before, after = record["before"], record["after"]
    print(f"recalibrated on {record['n_real']} real + {record['n_fake']} fake videos of {record['sample']['path']} "
          f"({record['method']}: scale {record['scale']:.3g}, bias {record['bias']:.3g}; threshold "
          f"{record['threshold']:.4g} for {record['target_fpr']:g} of the real videos called fake)")
    print(f"  {record['estimated_by']}:")
    for key, label in (("ece", "ECE"), ("false_positive_rate", "real videos called fake"),
                       ("catch_rate", "fakes caught")):
        print(f"  {label:<24} before {_fmt(before.get(key))}  after {_fmt(after.get(key))}")
    if record.get("warning"):
        print(f"  warning: {record['warning']}")
    print(f"new model: {out / paths.MODEL_DIR} and {out / paths.MODEL_ARCHIVE}")


def _register(args: argparse.Namespace, record: dict[str, Any], archive: Path) -> None:
    registry = LocalRegistry()
    group = args.group or DEFAULT_GROUP
    parent: dict[str, Any] = {"path": str(args.model)}
    if Path(args.model).is_file():
        parent["sha256"] = sha256_file(args.model)
        found = registry.find(group, parent["sha256"])
        if found is not None:
            parent["version"] = found.version
    source = {"derived_from": parent, "recalibration_sample": record["sample"],
              "recalibration": {k: record[k] for k in ("method", "scale", "bias", "threshold", "target_fpr",
                                                        "n_real", "n_fake")}}
    metrics = {f"recalibrated_{k}": v for k, v in record["after"].items() if v is not None}
    name = f"v{parent['version']}" if "version" in parent else parent["path"]
    mv = registry.register(group, archive, metrics, source=source,
                           description=f"recalibrated from {name} on {record['sample']['path']}")
    print(f"registered {group} v{mv.version} ({mv.status}), derived from {name}")


def _download_package(arn: str, folder: Path) -> dict[str, Any]:
    """The model package ``arn`` described, and its model.tar.gz downloaded into ``folder``."""
    sm, s3 = _aws("sagemaker"), _aws("s3")
    desc = sm.describe_model_package(ModelPackageName=arn)
    containers = (desc.get("InferenceSpecification") or {}).get("Containers") or []
    if not containers or not str(containers[0].get("ModelDataUrl", "")).startswith("s3://"):
        raise RegistryError(f"model package {arn} has no ModelDataUrl in its InferenceSpecification to recalibrate")
    bucket, key = split_s3(containers[0]["ModelDataUrl"])
    local = folder / paths.MODEL_ARCHIVE
    local.parent.mkdir(parents=True, exist_ok=True)
    s3.download_file(bucket, key, str(local))
    return {**desc, "local": local, "ModelDataUrl": containers[0]["ModelDataUrl"]}


def _register_package(parent: dict[str, Any], record: dict[str, Any], archive: Path) -> None:
    """The recalibrated model as a new package of the parent's group: same inference specification, new
    model data (uploaded beside the parent's), PendingManualApproval, metadata naming parent and sample."""
    from deepfake.core.vocabulary import PENDING

    bucket, key = split_s3(parent["ModelDataUrl"])
    new_key = f"{key.rsplit('/', 1)[0]}/recalibrated-{record['created'].replace(':', '').replace('+', 'Z')[:17]}/" \
              f"{paths.MODEL_ARCHIVE}"
    _aws("s3").upload_file(str(archive), bucket, new_key)
    spec = json.loads(json.dumps(parent["InferenceSpecification"], default=str))
    for container in spec["Containers"]:
        container["ModelDataUrl"] = f"s3://{bucket}/{new_key}"
    sample = record["sample"]
    metadata = {"DerivedFrom": parent["ModelPackageArn"], "RecalibrationMethod": record["method"],
                "RecalibrationSample": str(sample.get("path")), "RecalibrationSampleSha256": str(sample.get("sha256")),
                "RecalibrationVideos": f"{record['n_real']} real + {record['n_fake']} fake",
                "Threshold": f"{record['threshold']:.6g}", "TargetFpr": f"{record['target_fpr']:g}"}
    arn = _aws("sagemaker").create_model_package(
        ModelPackageGroupName=parent["ModelPackageGroupName"], InferenceSpecification=spec,
        ModelApprovalStatus=PENDING, CustomerMetadataProperties=metadata,
        ModelPackageDescription=f"recalibrated from {parent['ModelPackageArn']} on {sample.get('path')}"[:1000],
    )["ModelPackageArn"]
    print(f"registered {arn} ({PENDING}), derived from {parent['ModelPackageArn']}")


def _aws(service: str) -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise ConfigError(f"a SageMaker model package needs boto3: {pip_hint('boto3')}") from exc
    return boto3.client(service)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
