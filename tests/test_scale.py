"""The registered pipeline at scale, proven here: a synthetic archive of about 2,000 short videos (DFDC's layout)
run through `pipeline-local` with volumes far smaller than the archive, held to them as SageMaker would.

`make test-scale` runs it (several minutes: extraction of ~2,000 videos on eight emulated instances); the
default `make test` leaves it out. A volume of N GB stands for N MB here (`--volume-unit 1MB`), so the
archive's ~200 MB meets volumes of tens of MB as DFDC's 470 GB meets volumes of tens of GB. Exploration
must not download the archive, training must not download every crop nor hold them decoded, and every job
says what it downloaded. The definition the kit had before (exploration's FullyReplicated copy of the
archive; training's copy of the whole extraction output) is refused by the same executor on the same
volumes: those jobs fail like a full disk before they start.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aws_server import REGION, ROLE_ARN, moto_server

from deepfake.core import paths

BIN = Path(sys.executable).parent
BUCKET, GROUP = "deepfake-scale", "deepfake-detector"
REAL_COPIES, FAKES_PER_REAL = 60, 5               # DFDC's mix: about five fakes per real video
MB = 1024**2
TIMEOUT_S = 3600                                  # the pipeline's run; the first test's setup holds it
pytestmark = [pytest.mark.scale, pytest.mark.aws, pytest.mark.slow, pytest.mark.timeout(TIMEOUT_S + 600),
              pytest.mark.filterwarnings("ignore:Running within a PipelineSession")]
# What does not shrink with --volume-unit: the model (efficientnet-lite0: weights 13 MB and model.tar.gz 13 MB,
# ~26 MB as an input or an output) and training's checkpoint with the optimiser's state (38 MB). Training writes
# the model and its checkpoint, scoring reads the model, the evaluation reads it and writes the gated one; their
# volumes hold that beside what scales with the data (on DFDC's volumes of tens of GB, it is nothing).
FIXED_MB = {"train": 70, "score": 30, "evaluate": 55}
# VolumeSizeInGB per step: with --volume-unit 1MB, that many MB here.
RESOURCES = {"inventory": {"volume_gb": 2}, "explore": {"volume_gb": 30}, "extract": {"volume_gb": 90},
             "train": {"volume_gb": 90 + FIXED_MB["train"]}, "score": {"volume_gb": 90 + FIXED_MB["score"]},
             "evaluate": {"volume_gb": 80 + FIXED_MB["evaluate"]}}
PARAMETERS = {"ProcessingInstanceCount": 8, "EvaluationInstanceCount": 2, "MetricThreshold": 0.0}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """About 2,000 videos in one DFDC part, five fakes per real: the demo's 12 clips of 96 frames, each real
    copied 60 times, each fake as often as makes five fakes per real, every fake pointing at a copy of its
    original in the same split."""
    from deepfake.demo.build import build_demo_dataset

    demo = build_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", n_videos=12, seed=1, clip_frames=96,
                              progress=False) / "dfdc_train_part_0"
    meta = json.loads((demo / "metadata.json").read_text())
    reals = [n for n, i in meta.items() if i["label"] == "REAL"]
    fake_copies = round(FAKES_PER_REAL * REAL_COPIES * len(reals) / (len(meta) - len(reals)))
    root = tmp_path_factory.mktemp("archive")
    part = root / "dfdc_train_part_0"
    part.mkdir()
    out = {}
    for name, info in meta.items():
        for k in range(REAL_COPIES if name in reals else fake_copies):
            copy = f"c{k:03d}_{name}"
            shutil.copy(demo / name, part / copy)
            out[copy] = {**info, **({"original": f"c{k % REAL_COPIES:03d}_{info['original']}"}
                                    if info.get("original") else {})}
    (part / "metadata.json").write_text(json.dumps(out))
    return root


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    pytest.importorskip("sagemaker")
    with moto_server(tmp_path_factory.mktemp("aws")) as server:
        server.client("s3").create_bucket(Bucket=BUCKET)
        server.client("sagemaker").create_model_package_group(ModelPackageGroupName=GROUP)
        yield server


@pytest.fixture(scope="module")
def run(aws, archive, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    kwargs = {"default_bucket": BUCKET, "profile": "scale", "resources": RESOURCES}
    cmd = [str(BIN / "pipeline-local"), "--endpoint", aws.endpoint, "--region", REGION, "--state", str(state),
           "--module-name", "pipelines.deepfake.pipeline", "--kwargs", json.dumps(kwargs), "--role-arn", ROLE_ARN,
           "--input", f"InputDataUrl={archive}", "--parameters", json.dumps(PARAMETERS), "--volume-unit", "1MB"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=aws.subprocess_env())
    (state / "pipeline-local.out").write_text(proc.stdout + proc.stderr)
    records = sorted((state / "executions").glob("*/execution.json"), key=lambda p: p.stat().st_mtime)
    return proc, json.loads(records[-1].read_text()) if records else None, state


def test_every_step_passes_on_volumes_far_smaller_than_the_archive_and_says_what_it_downloaded(archive, run):
    proc, execution, _state = run
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    archive_bytes = sum(p.stat().st_size for p in archive.rglob("*") if p.is_file())
    assert archive_bytes > 150 * MB
    jobs = ["inventory", "explore", "extract", "train", "score", "evaluate"]
    for name in jobs:
        record = execution["steps"][name]
        assert record["status"] == "Succeeded", (name, record["reason"])
        volume = RESOURCES[name]["volume_gb"] * MB
        assert volume - FIXED_MB.get(name, 0) * MB < archive_bytes / 2       # far smaller than the archive
        for instance in record["properties"]["LocalInstances"]:
            downloaded = sum(instance["downloaded_bytes"].values())
            assert downloaded + 0 <= instance["peak_disk_bytes"] <= volume, (name, instance["host"])
            log = Path(instance["log"]).read_text()
            assert f"instance {instance['host']}: downloaded" in log              # and the log says so
        assert any(line.split()[:1] == [name] and "downloaded" in line for line in proc.stdout.splitlines())
    explore = execution["steps"]["explore"]["properties"]["LocalInstances"][0]
    assert set(explore["downloaded_bytes"]) == {"code"}                         # the archive stays in S3
    extract = execution["steps"]["extract"]["properties"]["LocalInstances"]
    assert len(extract) == 8 and all(sum(i["downloaded_bytes"].values()) < archive_bytes / 3 for i in extract)
    assert len(execution["steps"]["score"]["properties"]["LocalInstances"]) == 2
    assert execution["steps"]["register"]["status"] == "Succeeded"


def test_training_streamed_its_group_of_crops_and_checkpointed(run, aws):
    proc, execution, _state = run
    assert proc.returncode == 0
    train = execution["steps"]["train"]["properties"]["LocalInstances"][0]
    log = Path(train["log"]).read_text()
    assert "crops streamed from" in log
    outputs = {o["OutputName"]: o["S3Output"]["S3Uri"]
               for o in execution["steps"]["train"]["properties"]["ProcessingOutputConfig"]["Outputs"]}
    bucket, key = paths.split_s3(outputs["checkpoints"])
    assert aws.client("s3").head_object(Bucket=bucket, Key=f"{key}/checkpoint.pt")["ContentLength"] > 0


def test_the_definition_before_this_change_would_not_fit(run, aws, archive, tmp_path):
    """The same executor and volumes refuse what the old definition asked: exploration with the whole archive
    as a File-mode input, and training with the whole extraction output (every crop of every split)."""
    from pipelines.local.jobs import JOB_FAILED, run_job
    from pipelines.local.limits import Limits
    from pipelines.local.s3 import Storage

    proc, execution, _state = run
    assert proc.returncode == 0
    steps = execution["steps"]
    code = {s: next(i for i in steps[s]["properties"]["ProcessingInputs"] if i["InputName"] == "code")
            for s in ("explore", "train")}
    outputs = {o["OutputName"]: o["S3Output"]["S3Uri"]
               for o in steps["extract"]["properties"]["ProcessingOutputConfig"]["Outputs"]}
    data_uri = next(p for p in [steps["explore"]["properties"]["AppSpecification"]["ContainerArguments"]]
                    for p in p if isinstance(p, str) and p.startswith("s3://"))

    def old_job(step, inputs):
        return {"AppSpecification": {"ContainerEntrypoint": [sys.executable, "-c", "pass"]},
                "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge",
                                                          # the room its inputs had beside the model
                                                          "VolumeSizeInGB": RESOURCES[step]["volume_gb"]
                                                          - FIXED_MB.get(step, 0)}},
                "ProcessingInputs": [code[step], *({"InputName": n, "S3Input": {
                    "S3Uri": u, "LocalPath": f"/opt/ml/processing/input/{n}", "S3DataType": "S3Prefix",
                    "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}} for n, u in inputs)]}

    storage = Storage(aws.client("s3"))
    for step, inputs in (("explore", [("data", data_uri)]),
                         ("train", [("extract", outputs["extract"]), ("crops", outputs["crops"])])):
        result = run_job(old_job(step, inputs), folder=tmp_path / step, storage=storage, env={},
                         limits=Limits(volume_unit=MB))
        assert result.status == JOB_FAILED and "No space left on device" in result.failure_reason, step
