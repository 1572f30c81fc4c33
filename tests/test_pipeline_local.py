"""`pipeline-local`: the exact SageMaker pipeline definition executed here, end to end, on tiny demo data.

One local AWS API (moto on loopback) serves the whole module, as an account would:
the first test runs what `make pipeline-local` runs (the definition built by
get-pipeline-definition, every notebook as a Processing job, extraction on two
instances, the gate, registration, approval, deploy/build.py, the staging stack and
the staging test against `deepfake serve` of the registered model.tar.gz); the
others reuse its S3 and registry: a single-instance extraction to compare the
shards with, a notebook broken on purpose and the rerun after the fix, and the
scoring pipeline over the demo videos against `deepfake score`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from aws_server import REGION, ROLE_ARN, moto_server

from deepfake.core import paths
from deepfake.data.faces_table import read_faces
from deepfake.data.manifest import read_manifest
from deepfake.orchestration import steps

pytestmark = [pytest.mark.aws, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:Running within a PipelineSession")]

BIN = Path(sys.executable).parent
BUCKET, PREFIX, GROUP = "deepfake-local-tests", "deepfake", "deepfake-detector"
KWARGS = {"default_bucket": BUCKET, "profile": "tiny"}
PARAMETERS = {"MetricThreshold": 0.0, "ProcessingInstanceCount": 2}   # tiny data: the gate always passes
TIMEOUT_S = 600


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    pytest.importorskip("sagemaker")
    with moto_server(tmp_path_factory.mktemp("aws")) as server:
        server.client("s3").create_bucket(Bucket=BUCKET)                       # the one-time set-up
        server.client("sagemaker").create_model_package_group(ModelPackageGroupName=GROUP)
        yield server


def pipeline_local(aws, state, *args, env=None):
    cmd = [str(BIN / "pipeline-local"), "--endpoint", aws.endpoint, "--region", REGION, "--state", str(state), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                          env=aws.subprocess_env(**(env or {})))


def last_execution(state):
    records = sorted((state / "executions").glob("*/execution.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(records[-1].read_text())


def download(aws, uri, folder):
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = aws.client("s3")
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        target = folder / obj["Key"][len(prefix):].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, obj["Key"], str(target))
    return folder


def output_uri(record, channel):
    outputs = record["properties"]["ProcessingOutputConfig"]["Outputs"]
    return next(o["S3Output"]["S3Uri"] for o in outputs if o["OutputName"] == channel)


@pytest.fixture(scope="module")
def chain(aws, tiny_data, tmp_path_factory):
    """What `make pipeline-local` runs, on the tiny data and profile."""
    state = tmp_path_factory.mktemp("state")
    proc = pipeline_local(aws, state, "--module-name", "pipelines.deepfake.pipeline", "--kwargs", json.dumps(KWARGS),
                          "--role-arn", ROLE_ARN, "--input", f"InputDataUrl={tiny_data}",
                          "--parameters", json.dumps(PARAMETERS), "--approve", "--deploy", "--prod", "approve")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    good = state / "good-definition.json"          # kept: the broken-notebook test builds its own
    shutil.copy(state / "definitions" / "DeepfakePipeline.json", good)
    return state, proc.stdout, last_execution(state), good


def test_make_pipeline_local_runs_every_step_registers_approves_and_deploys(aws, chain):
    state, out, execution, _ = chain
    notebook_steps = [s.name for s in steps.STEPS]
    records = execution["steps"]
    assert execution["status"] == "Succeeded"
    jobs = ["inventory", *notebook_steps, "score"]
    assert all(records[name]["status"] == "Succeeded" for name in [*jobs, "gate", "register"])
    assert records["gate-failed"]["status"] == "NotStarted"
    for name in [*jobs, "gate", "register"]:                               # each step's status and duration
        assert any(line.split()[:2] == [name, "Succeeded"] and line.rstrip().split()[2].endswith("s")
                   for line in out.splitlines()), name
    for name in jobs:                                                      # and what its instances downloaded
        assert any(line.split()[:1] == [name] and "downloaded" in line for line in out.splitlines()), name
    s3 = aws.client("s3")
    for step in steps.STEPS:                                               # every report, in S3 and printed
        html = Path(step.notebook).with_suffix(".html").name
        hosts = [f"{i['host']}/" for i in records[step.name]["properties"]["LocalInstances"]] \
            if step.name in steps.SHARDED else [""]                       # each instance's under its own keys
        for host in hosts:
            report = f"{output_uri(records[step.name], 'report')}/{host}{html}"
            assert report in out
            s3.head_object(Bucket=BUCKET, Key=report.removeprefix(f"s3://{BUCKET}/"))

    registered = records["register"]["properties"]
    assert registered["ModelApprovalStatus"] == "PendingManualApproval"   # as registered, before --approve
    evaluate_output = output_uri(records[steps.EVALUATION_STEP], steps.EVALUATION_STEP)
    assert registered["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == f"{evaluate_output}/{paths.EVALUATION}"
    model_url = registered["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    assert model_url == f"{output_uri(records[steps.MODEL_STEP], steps.MODEL_STEP)}/{paths.MODEL_ARCHIVE}"
    described = aws.client("sagemaker").describe_model_package(ModelPackageName=registered["ModelPackageArn"])
    assert described["ModelApprovalStatus"] == "Approved"

    deploy = Path(execution["folder"]) / "deploy"                         # the deploy pipeline of infra/cicd.yml
    from pipelines import cicd

    stages = [a.stage for a in cicd.pipeline_actions(cicd.load_template())]
    walked = [line.split()[:3] for line in out.split("deploy pipeline (", 1)[1].splitlines()[1:len(stages) + 1]]
    assert [(w[0], w[2]) for w in walked] == [(stage, "Succeeded") for stage in stages]
    results = json.loads((deploy / "test-results.json").read_text())                 # the staging test
    assert results["status"] == "passed" and results["response"]["status"] == "ok"
    prod = json.loads((deploy / "prod-request.json").read_text())                     # a request to prod
    assert prod["status"] == "passed" and prod["endpoint_name"].endswith("-prod")
    assert json.loads((deploy / "BuildArtifact" / "model-package-export.json").read_text())["ModelPackageArn"] == \
        registered["ModelPackageArn"]                                      # build.py picked this package
    served = hashlib.sha256((deploy / "model.tar.gz").read_bytes()).hexdigest()
    in_s3 = s3.get_object(Bucket=BUCKET, Key=model_url.removeprefix(f"s3://{BUCKET}/"))["Body"].read()
    assert served == hashlib.sha256(in_s3).hexdigest()                     # the exact registered artifact
    stacks = {s["StackName"]: s["StackStatus"] for s in aws.client("cloudformation").describe_stacks()["Stacks"]}
    assert stacks.get("deepfake-local-staging") == stacks.get("deepfake-local-prod") == "CREATE_COMPLETE"
    for step in steps.STEPS:                   # each job ran in this environment as in the kit's image: no install
        log = (Path(execution["folder"]) / step.name / "algo-1" / "job.log").read_text()
        assert "nothing to install" in log, step.name


def test_two_extraction_instances_score_their_shards_and_merge_to_the_single_instance_table(aws, chain, tmp_path):
    state, _, execution, good = chain
    extract = execution["steps"]["extract"]
    instances = extract["properties"]["LocalInstances"]
    assert [i["host"] for i in instances] == ["algo-1", "algo-2"]
    shards = {i["host"]: set(i["inputs"]["data"]) for i in instances}
    assert not shards["algo-1"] & shards["algo-2"] and all(shards.values())
    two = read_faces(download(aws, output_uri(extract, "extract"), tmp_path / "two"))
    videos = read_manifest(download(aws, output_uri(execution["steps"]["explore"], "explore"),
                                    tmp_path / "explore") / paths.VIDEOS_MANIFEST)
    path_of = dict(zip(videos["video_id"], videos["path"], strict=True))
    for host, files in shards.items():                         # each instance scored only the videos it was given
        mine = read_faces(tmp_path / "two" / f"shard-{host}")
        assert set(mine["video_id"]) and {path_of[v] for v in mine["video_id"]} <= files
    assert set(two["video_id"]) == set(videos["video_id"])

    one_proc = pipeline_local(aws, state, "--definition", str(good), "--pipeline-name", "DeepfakePipeline",
                              "--parameters", json.dumps({**PARAMETERS, "ProcessingInstanceCount": 1}),
                              "--no-cache", "--stop-after", "extract")
    assert one_proc.returncode == 0, one_proc.stdout[-3000:] + one_proc.stderr[-2000:]
    single = last_execution(state)
    assert single["status"] == "Stopped" and single["steps"]["train"]["status"] == "NotStarted"
    assert [i["host"] for i in single["steps"]["extract"]["properties"]["LocalInstances"]] == ["algo-1"]
    one = read_faces(download(aws, output_uri(single["steps"]["extract"], "extract"), tmp_path / "one"))

    def table(df):
        return df.drop(columns=["abs_path"]).sort_values(["video_id", "frame_idx", "face_idx"]).reset_index(drop=True)

    two, one = table(two), table(one)
    pd.testing.assert_frame_equal(two.drop(columns=["score", "landmarks"]), one.drop(columns=["score", "landmarks"]))
    assert np.allclose(two["score"], one["score"], atol=1e-3)            # printed to 4 decimals, 0.1 px:
    for a, b in zip(two["landmarks"], one["landmarks"], strict=True):     # a last digit may round either way
        assert np.allclose(json.loads(a or "[]"), json.loads(b or "[]"), atol=0.11)


def _sockets(folder: str, names: list[str]) -> list[str]:
    """copytree's ignore: the socket files (which it cannot copy) among ``names``."""
    return [n for n in names if stat.S_ISSOCK(os.lstat(os.path.join(folder, n)).st_mode)]


def test_a_broken_notebook_fails_its_step_keeps_the_executed_notebook_and_a_fixed_rerun_reuses_the_cache(
        aws, chain, tmp_path, monkeypatch):
    state, _, first, good = chain
    broken = tmp_path / "notebooks"
    shutil.copytree(paths.notebooks_dir(), broken, ignore=_sockets)     # a kernel may leave its ipc sockets there
    train = broken / steps.step("train").notebook
    nb = json.loads(train.read_text())
    at = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", []))
    nb["cells"].insert(at + 1, {"cell_type": "code", "id": "broken", "metadata": {}, "execution_count": None,
                                "outputs": [], "source": ["raise RuntimeError('broken on purpose by the test')"]})
    train.write_text(json.dumps(nb))
    monkeypatch.setenv("DEEPFAKE_NOTEBOOKS", str(broken))
    definition = tmp_path / "broken.json"
    with aws.environment():
        from pipelines.deepfake.pipeline import get_pipeline

        definition.write_text(get_pipeline(region=REGION, role=ROLE_ARN, **KWARGS).definition())

    proc = pipeline_local(aws, state, "--definition", str(definition), "--pipeline-name", "DeepfakePipeline",
                          "--parameters", json.dumps(PARAMETERS))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    failed = last_execution(state)
    records = failed["steps"]
    assert failed["status"] == "Failed" and records["train"]["status"] == "Failed"
    # As on SageMaker: the job's reason is generic, its exit message says which cell raised what and where the
    # executed notebook is in S3; the step's record and the printed report show both (run-pipeline prints the same).
    job = records["train"]["properties"]
    assert job["FailureReason"] == "AlgorithmError: See job logs for more information"
    report_uri = output_uri(records["train"], "report")
    assert job["ExitMessage"].startswith("step train: cell In [")
    assert "raised RuntimeError: broken on purpose by the test" in job["ExitMessage"]
    assert f"executed notebook kept at {report_uri}/{train.name}" in job["ExitMessage"]
    assert records["train"]["reason"].startswith(f"processing job {job['ProcessingJobName']}: AlgorithmError")
    assert f"    executed notebook kept at {report_uri}/{train.name}" in proc.stdout
    assert failed["reason"].startswith("step train failed: step train: cell In [")
    assert all(records[name]["status"] == "NotStarted" for name in ("evaluate", "gate", "register", "gate-failed"))
    report = download(aws, output_uri(records["train"], "report"), tmp_path / "report")
    executed = json.loads((report / train.name).read_text())                # the executed notebook, in S3
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "RuntimeError"
    assert (report / train.with_suffix(".html").name).is_file()

    monkeypatch.delenv("DEEPFAKE_NOTEBOOKS")
    fixed = pipeline_local(aws, state, "--definition", str(good), "--pipeline-name", "DeepfakePipeline",
                           "--parameters", json.dumps(PARAMETERS))
    assert fixed.returncode == 0, fixed.stdout[-3000:] + fixed.stderr[-2000:]
    rerun = last_execution(state)["steps"]
    for step in steps.STEPS:
        assert rerun[step.name]["cached_from"] == first["id"], step.name
    assert rerun["register"]["status"] == "Succeeded"


def test_the_scoring_pipeline_scores_the_archive_on_two_instances_like_deepfake_score(aws, chain, tiny_data,
                                                                                      tmp_path):
    state, _, first, _ = chain
    package = first["steps"]["register"]["properties"]                     # approved by the chain
    definition = tmp_path / "scoring.json"
    with aws.environment():
        from pipelines.deepfake.scoring import get_pipeline

        definition.write_text(get_pipeline(region=REGION, role=ROLE_ARN, default_bucket=BUCKET).definition())
    args = ["--definition", str(definition), "--pipeline-name", "DeepfakeScoring", "--input",
            f"ArchiveUrl={tiny_data}", "--parameters", json.dumps({"ProcessingInstanceCount": 2,
                                                                   "WorkersPerInstance": 1})]
    proc = pipeline_local(aws, state, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    execution = last_execution(state)
    merged_uri = output_uri(execution["steps"]["merge"], "merged")
    merged = read_manifest(download(aws, merged_uri, tmp_path / "merged") / "predictions.csv")
    assert f"{merged_uri}/predictions.md" in proc.stdout                   # the summary report

    model = tmp_path / "model.tar.gz"
    url = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    aws.client("s3").download_file(BUCKET, url.removeprefix(f"s3://{BUCKET}/"), str(model))
    local = subprocess.run([str(BIN / "deepfake"), "score", "--data", str(tiny_data), "--model", str(model),
                            "--out", str(tmp_path / "local.csv"), "--workers", "2"], capture_output=True, text=True,
                           timeout=TIMEOUT_S, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert local.returncode == 0, local.stderr[-2000:]
    expected = read_manifest(tmp_path / "local.csv")
    assert len(expected) == 12
    pd.testing.assert_frame_equal(merged, expected, check_exact=False, atol=1e-6)

    scoring = download(aws, output_uri(execution["steps"]["score"], "scoring"), tmp_path / "scoring")
    shards = [json.loads((scoring / f"shard-algo-{k}.json").read_text()) for k in (1, 2)]
    assert not set(shards[0]["videos"]) & set(shards[1]["videos"])
    assert sorted(shards[0]["videos"] + shards[1]["videos"]) == list(expected["video_key"])
    assert json.loads((scoring / "model.json").read_text())["model_package_arn"] == package["ModelPackageArn"]

    again = pipeline_local(aws, state, *args)                              # resumable: nothing scored twice
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
    rerun = last_execution(state)
    scoring = download(aws, output_uri(rerun["steps"]["score"], "scoring"), tmp_path / "scoring-again")
    for k in (1, 2):
        shard = json.loads((scoring / f"shard-algo-{k}.json").read_text())
        assert shard["scored"] == 0 and shard["skipped"] == len(shard["videos"])
    remerged = read_manifest(download(aws, output_uri(rerun["steps"]["merge"], "merged"), tmp_path / "m2")
                             / "predictions.csv")
    pd.testing.assert_frame_equal(remerged, merged)
