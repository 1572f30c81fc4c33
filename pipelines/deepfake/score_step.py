"""Entry point of the scoring pipeline's Processing steps: score an archive's shard, or merge the shards.

``score`` runs on every instance of the sharded ``score`` step: it resolves the
model package (the one given, else the group's latest Approved; anything not
Approved is refused), downloads its ``model.tar.gz``, and scores the videos of
this instance's shard with :func:`deepfake.serving.batch.score_videos`, the
endpoint's own scoring. Part files go to the ``parts`` output, uploaded as they
are written; videos that the parts already in S3 (earlier executions) hold for
this model version are skipped, so a rerun resumes. It also writes
``model.json`` and ``shard-<host>.json`` (this shard's video keys and counts).

``merge`` runs once after them: one table of the archive's videos (the union of
the shards' keys), their latest row for this model version, and a short report
(``predictions.csv`` + ``predictions.json``, ``predictions.md``).

Like ``run_step.py`` (whose install and exit-message helpers it uses) it imports
only the standard library before the install.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__:
    from . import run_step
else:                                                # run as a script from the code input
    import run_step

log = logging.getLogger("score_step")

MODEL_INFO = "model.json"                            # written by score, read by merge (and a PropertyFile)
SHARD_INFO = "shard-{host}.json"
PREDICTIONS = "predictions.csv"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="score_step.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-install", dest="install", action="store_false",
                        help="use the kit already installed (local runs and tests)")
    sub = parser.add_subparsers(dest="action", required=True)
    score = sub.add_parser("score", help="score this instance's shard of the archive")
    score.add_argument("--videos-dir", required=True, type=Path, help="this instance's shard of the archive")
    score.add_argument("--archive-url", required=True, help="the archive's S3 prefix (recorded)")
    score.add_argument("--model-package-arn", default="", help="empty: the group's latest Approved package")
    score.add_argument("--model-package-group", required=True)
    score.add_argument("--parts-url", required=True, help="S3 prefix of every execution's part files")
    score.add_argument("--parts-dir", required=True, type=Path, help="where this job writes its part files")
    score.add_argument("--out-dir", required=True, type=Path, help="model.json and shard-<host>.json")
    score.add_argument("--workers", type=int, default=2, help="videos scored at once on this instance")
    merge = sub.add_parser("merge", help="merge the shards into one table and a summary")
    merge.add_argument("--parts-dir", required=True, type=Path, help="every part file of the archive")
    merge.add_argument("--scoring-dir", required=True, type=Path, help="the score step's model.json and shards")
    merge.add_argument("--out-dir", required=True, type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    failed = run_step.start(f"scoring {args.action}", args.install)
    if failed:
        return failed
    from botocore.exceptions import BotoCoreError, ClientError

    from deepfake.core.errors import DeepfakeError

    try:
        return score(args) if args.action == "score" else merge(args)
    except DeepfakeError as exc:
        return run_step.fail(f"scoring {args.action}: {exc}", run_step.EXIT_CONFIG)
    except (BotoCoreError, ClientError) as exc:
        return run_step.fail(f"scoring {args.action}: AWS call failed: {exc}", run_step.EXIT_NOTEBOOK)


def score(args: argparse.Namespace) -> int:
    import boto3

    from deepfake.core.files import write_json
    from deepfake.serving.batch import archive_videos, read_parts, score_videos, scored_keys
    from deepfake.serving.predictor import Predictor

    host = run_step.current_host()
    package = model_package(boto3.client("sagemaker"), args.model_package_arn, args.model_package_group)
    s3 = boto3.client("s3")
    with tempfile.TemporaryDirectory(prefix="deepfake-score-") as tmp:
        model = Path(tmp) / "model.tar.gz"
        _download(s3, package["ModelDataUrl"], model)
        previous = Path(tmp) / "previous"
        found = _download_parts(s3, args.parts_url, previous)
        predictor = Predictor.from_path(model)
        keys = archive_videos(args.videos_dir)
        done = scored_keys(read_parts(previous), predictor.version)
        log.info("%s: %d videos in this shard, %d scored by model %s in %d earlier part file(s)", host, len(keys),
                 len(done & set(keys)), predictor.version, found)
        counts = score_videos(args.videos_dir, predictor, args.parts_dir, keys=keys, done=done,
                              workers=args.workers, name=host)
    info = {"model_version": predictor.version, "model_package_arn": package["ModelPackageArn"],
            "model_package_version": package.get("ModelPackageVersion"), "model_data_url": package["ModelDataUrl"],
            "archive_url": args.archive_url}
    write_json(args.out_dir / MODEL_INFO, info)
    write_json(args.out_dir / SHARD_INFO.format(host=host),
               {"host": host, "videos": keys, "skipped": counts.skipped, "scored": counts.scored,
                "statuses": dict(counts.statuses)})
    log.info("%s: scored %d, skipped %d (%s)", host, counts.scored, counts.skipped, dict(counts.statuses))
    return 0


def merge(args: argparse.Namespace) -> int:
    from deepfake.core.errors import ManifestError
    from deepfake.core.files import read_json
    from deepfake.serving.batch import merge_predictions, read_parts, summarize, write_predictions

    info_path = args.scoring_dir / MODEL_INFO
    if not info_path.is_file():
        raise ManifestError(f"{info_path} is missing: the score step writes it; did it run?")
    info = read_json(info_path)
    shards = [read_json(p) for p in sorted(args.scoring_dir.glob(SHARD_INFO.format(host="*")))]
    keys = sorted({k for shard in shards for k in shard["videos"]})
    table = merge_predictions(read_parts(args.parts_dir), info["model_version"], keys)
    summary = summarize(table, model_version=info["model_version"], missing=set(keys) - set(table["video_key"]),
                        extra={"model_package_arn": info["model_package_arn"], "archive_url": info["archive_url"],
                               "shards": {s["host"]: {k: s[k] for k in ("skipped", "scored", "statuses")}
                                          for s in shards}})
    out = write_predictions(table, args.out_dir / PREDICTIONS, summary, config=info)
    log.info("merged %d videos from %d shard(s) into %s: %s", len(table), len(shards), out, summary["statuses"])
    return 0


def model_package(sm: Any, arn: str, group: str) -> dict[str, Any]:
    """The package to score with: ``arn``, else the group's latest Approved one; it must be Approved."""
    from deepfake.core.errors import RegistryError
    from deepfake.core.vocabulary import APPROVED

    if not arn:
        found = sm.list_model_packages(ModelPackageGroupName=group, ModelApprovalStatus=APPROVED,
                                       SortBy="CreationTime", SortOrder="Descending", MaxResults=1)
        summaries = found.get("ModelPackageSummaryList", [])
        if not summaries:
            raise RegistryError(f"model package group {group!r} has no Approved package; approve one or pass "
                                "ModelPackageArn")
        arn = summaries[0]["ModelPackageArn"]
    desc = sm.describe_model_package(ModelPackageName=arn)
    if desc.get("ModelApprovalStatus") != APPROVED:
        raise RegistryError(f"model package {arn} is {desc.get('ModelApprovalStatus')}, not {APPROVED}: an archive is "
                            "only scored with an approved model; approve it first")
    containers = (desc.get("InferenceSpecification") or {}).get("Containers") or []
    if not containers or not containers[0].get("ModelDataUrl"):
        raise RegistryError(f"model package {arn} has no ModelDataUrl in its InferenceSpecification")
    return {**desc, "ModelDataUrl": containers[0]["ModelDataUrl"]}


def _download(s3: Any, uri: str, target: Path) -> None:
    from deepfake.core.paths import split_s3

    bucket, key = split_s3(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    s3.download_file(bucket, key, str(target))


def _download_parts(s3: Any, prefix_uri: str, folder: Path) -> int:
    """Download the part files under ``prefix_uri`` (earlier executions); returns how many."""
    from deepfake.core.paths import split_s3

    bucket, prefix = split_s3(prefix_uri.rstrip("/") + "/")
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            name = obj["Key"].rsplit("/", 1)[-1]
            if name.startswith("part-") and name.endswith(".csv"):
                _download(s3, f"s3://{bucket}/{obj['Key']}", folder / name)
                count += 1
    return count


if __name__ == "__main__":
    sys.exit(main())
