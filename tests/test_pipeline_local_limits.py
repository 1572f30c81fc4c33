"""pipeline-local holds each Processing instance to what SageMaker enforces: inputs that fit its volume, a
volume it cannot overfill (files, and a deleted file it keeps mapped), its instance's memory, its maximum
run time; and it says how much each instance downloaded. Jobs here are small Python commands against
S3 in moto."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from pipelines.local.jobs import COMPLETED, JOB_FAILED, run_job
from pipelines.local.limits import MB, Limits, disk_usage
from pipelines.local.s3 import Storage

pytestmark = pytest.mark.aws

BUCKET = "limits"


@pytest.fixture
def storage():
    moto = pytest.importorskip("moto")
    import boto3

    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        for i in range(4):                                      # 4 objects of 300 KB: 1.2 MB
            client.put_object(Bucket=BUCKET, Key=f"data/v{i}.bin", Body=bytes(300 * 1024))
        yield Storage(client)


def job(code: str, *, count: int = 1, volume_gb: int = 1, instance_type: str = "ml.m5.large",
        runtime_s: int | None = None, sharded: bool = False) -> dict:
    arguments = {
        "AppSpecification": {"ContainerEntrypoint": [sys.executable, "-c", textwrap.dedent(code)]},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": count, "InstanceType": instance_type,
                                                  "VolumeSizeInGB": volume_gb}},
        "ProcessingInputs": [{"InputName": "data", "S3Input": {
            "S3Uri": f"s3://{BUCKET}/data/", "LocalPath": "/opt/ml/processing/input/data", "S3DataType": "S3Prefix",
            "S3InputMode": "File",
            "S3DataDistributionType": "ShardedByS3Key" if sharded else "FullyReplicated"}}],
    }
    if runtime_s is not None:
        arguments["StoppingCondition"] = {"MaxRuntimeInSeconds": runtime_s}
    return arguments


def run(arguments, storage, tmp_path, limits):
    timeout = (arguments.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
    return run_job(arguments, folder=tmp_path / "job", storage=storage, env={}, timeout_s=timeout, limits=limits)


def test_inputs_larger_than_the_volume_fail_the_job_before_it_starts(storage, tmp_path):
    result = run(job("print('never runs')"), storage, tmp_path, Limits(volume_unit=MB))     # 1.2 MB into 1 MB
    assert result.status == JOB_FAILED
    assert result.failure_reason.startswith("ClientError: No space left on device")
    assert "algo-1" in result.failure_reason and "data 1.2 MB" in result.failure_reason
    assert not (tmp_path / "job" / "algo-1" / "job.log").exists()                        # nothing ran


def test_a_sharded_input_fits_when_each_instance_holds_its_share_and_the_log_says_what_it_downloaded(
        storage, tmp_path):
    result = run(job("print('ok')", count=2, sharded=True), storage, tmp_path, Limits(volume_unit=MB))
    assert result.status == COMPLETED, result.failure_reason
    for instance in result.instances:
        assert instance.downloaded == {"data": 600 * 1024}
        log = instance.log.read_text()
        assert "downloaded input data: 2 objects, 600.0 KB" in log and "limits: volume 1.0 MB" in log
        assert "instance " + instance.host + ": downloaded 600.0 KB" in log


def test_a_job_that_fills_its_volume_is_stopped_like_a_full_disk(storage, tmp_path):
    code = """
        import time
        with open("big.bin", "wb") as fh:
            for _ in range(40):
                fh.write(bytes(256 * 1024)); fh.flush(); time.sleep(0.1)
        time.sleep(30)
    """
    result = run(job(code, volume_gb=2), storage, tmp_path, Limits(volume_unit=MB))      # 1.2 MB in, 10 MB written
    assert result.status == JOB_FAILED
    assert "AlgorithmError: No space left on device" in result.failure_reason
    assert "VolumeSizeInGB 2 (2.0 MB here)" in result.failure_reason


def test_a_deleted_file_the_job_keeps_mapped_counts_against_its_volume(tmp_path):
    import mmap
    import os
    import tempfile

    with tempfile.NamedTemporaryFile(dir=tmp_path) as tmp:
        tmp.write(b"x" * 3 * MB)
        tmp.flush()
        mapped = mmap.mmap(tmp.fileno(), 0)
    try:                                                       # unlinked now, still mapped by this process
        assert disk_usage(tmp_path) == 0
        assert disk_usage(tmp_path, [os.getpid()]) == 3 * MB
    finally:
        mapped.close()


def test_a_job_that_outgrows_its_memory_is_killed(storage, tmp_path):
    code = """
        import time
        held = []
        for _ in range(60):
            held.append(bytearray(20 * 1024 * 1024)); time.sleep(0.05)
        time.sleep(30)
    """
    result = run(job(code, volume_gb=4), storage, tmp_path, Limits(volume_unit=MB, memory_cap=300 * MB))
    assert result.status == JOB_FAILED
    assert "OutOfMemory" in result.failure_reason and "300.0 MB" in result.failure_reason


def test_the_job_sees_its_instances_memory_and_a_temporary_folder_on_its_volume(storage, tmp_path):
    code = """
        import json, os, tempfile
        print(json.dumps({"memory": os.environ.get("DEEPFAKE_MEMORY_BYTES"), "tmp": tempfile.gettempdir()}))
    """
    result = run(job(code, instance_type="ml.m5.xlarge"), storage, tmp_path, Limits(volume_unit=None))
    assert result.status == COMPLETED, result.failure_reason
    seen = json.loads(result.instances[0].log.read_text().splitlines()[-2])
    assert seen == {"memory": str(16 * 1024**3), "tmp": str(tmp_path / "job" / "algo-1" / "tmp")}


def test_a_job_past_its_maximum_run_time_is_stopped(storage, tmp_path):
    result = run(job("import time; time.sleep(60)", volume_gb=4, runtime_s=2), storage, tmp_path,
                 Limits(volume_unit=MB))
    assert result.status == JOB_FAILED and "MaxRuntimeInSeconds 2" in result.failure_reason
    assert result.seconds < 30
