"""The local executor's reading of a definition, without AWS: expressions, conditions, parameters, what it
refuses to run (named, never skipped), cache keys, the job's command line, and a Condition + Fail execution."""

from __future__ import annotations

import sys
from datetime import timedelta

import pytest

from deepfake.core import paths
from deepfake.core.errors import PipelineError
from pipelines.local.cache import cache_key, parse_duration
from pipelines.local.definition import load_definition, parameter_values
from pipelines.local.executor import execute
from pipelines.local.expressions import ExpressionError, Scope, UnsupportedError, condition, evaluate
from pipelines.local.jobs import command
from pipelines.local.s3 import Storage, local_name
from pipelines.local.server import Aws

OUTPUT = "s3://b/runs/x1/evaluate/output"
PROPERTIES = {"ProcessingOutputConfig": {"Outputs": [
    {"OutputName": "report", "S3Output": {"S3Uri": "s3://b/runs/x1/evaluate/report"}},
    {"OutputName": "evaluate", "S3Output": {"S3Uri": OUTPUT}}]}}


def scope(**parameters):
    documents = {("evaluate", "EvaluationReport"): {"metrics": {"video_auc": 0.75, "per": [{"auc": 0.5}]}}}
    return Scope(parameters={"Threshold": 0.8, "Count": 2, "Flag": True, **parameters},
                 execution={"PipelineExecutionId": "x1"}, properties={"evaluate": PROPERTIES},
                 property_file=lambda step, name: documents[(step, name)])


METRIC = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.evaluate.PropertyFiles.EvaluationReport"},
                          "Path": "metrics.video_auc"}}


def test_get_join_and_json_get_evaluate_as_sagemaker_documents_them():
    s = scope()
    output = {"Get": "Steps.evaluate.ProcessingOutputConfig.Outputs['evaluate'].S3Output.S3Uri"}
    assert evaluate(output, s) == OUTPUT
    assert evaluate({"Std:Join": {"On": "/", "Values": [output, "model.tar.gz"]}}, s) == f"{OUTPUT}/model.tar.gz"
    assert evaluate({"Std:Join": {"On": "", "Values": [{"Get": "Parameters.Count"}]}}, s) == "2"
    assert evaluate({"Std:Join": {"On": " ", "Values": [{"Get": "Parameters.Flag"}, METRIC]}}, s) == "true 0.75"
    assert evaluate(METRIC, s) == 0.75
    deep = {"Std:JsonGet": {**METRIC["Std:JsonGet"], "Path": "$.metrics.per[0]['auc']"}}
    assert evaluate(deep, s) == 0.5
    assert evaluate({"a": [{"Get": "Execution.PipelineExecutionId"}, 1]}, s) == {"a": ["x1", 1]}


@pytest.mark.parametrize(("value", "error", "message"), [
    ({"Std:Concat": {"Values": []}}, UnsupportedError, "expression Std:Concat is not supported"),
    ({"Get": "Parameters.Nope"}, ExpressionError, "no pipeline parameter 'Nope'"),
    ({"Get": "Steps.train.ProcessingJobName"}, ExpressionError, "step 'train' has not run"),
    ({"Get": "Execution.Nope"}, UnsupportedError, "execution variable 'Nope'"),
    ({"Std:JsonGet": {**METRIC["Std:JsonGet"], "Path": "metrics..auc"}}, UnsupportedError, "path syntax"),
    ({"Std:JsonGet": {**METRIC["Std:JsonGet"], "Path": "metrics.auc"}}, ExpressionError, "'auc' is not there"),
])
def test_what_cannot_be_evaluated_is_named(value, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace("[", r"\[")):
        evaluate(value, scope())


def test_conditions():
    s = scope()
    threshold = {"Get": "Parameters.Threshold"}
    assert not condition({"Type": "GreaterThanOrEqualTo", "LeftValue": METRIC, "RightValue": threshold}, s)
    assert condition({"Type": "LessThan", "LeftValue": METRIC, "RightValue": threshold}, s)
    assert condition({"Type": "Not", "Expression": {"Type": "Equals", "LeftValue": 1, "RightValue": 2}}, s)
    assert condition({"Type": "In", "QueryValue": {"Get": "Parameters.Count"}, "Values": [1, 2]}, s)
    assert condition({"Type": "Or", "Conditions": [{"Type": "GreaterThan", "LeftValue": 3, "RightValue": 2},
                                                   {"Type": "Equals", "LeftValue": 1, "RightValue": 2}]}, s)
    with pytest.raises(ExpressionError, match="both sides must be numbers"):
        condition({"Type": "GreaterThan", "LeftValue": "0.9", "RightValue": 0.8}, s)
    with pytest.raises(UnsupportedError, match="condition type 'Between'"):
        condition({"Type": "Between"}, s)


def processing(name, **changes):
    arguments = {"AppSpecification": {"ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/run.py"]},
                 "ProcessingInputs": [{"InputName": "code", "S3Input": {
                     "S3Uri": "s3://b/code/", "LocalPath": "/opt/ml/processing/input/code", "S3DataType": "S3Prefix",
                     "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}}],
                 "ProcessingOutputConfig": {"Outputs": []},
                 "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge"}}}
    for key, value in changes.items():
        arguments[key] = value
    return {"Name": name, "Type": "Processing", "Arguments": arguments}


def gate_definition():
    message = {"Std:Join": {"On": " ", "Values": ["auc", {"Get": "Parameters.Auc"}, "is below", 0.8]}}
    return {"Version": "2020-12-01", "Parameters": [
        {"Name": "Auc", "Type": "Float", "DefaultValue": 0.5},
        {"Name": "Approval", "Type": "String", "DefaultValue": "PendingManualApproval",
         "EnumValues": ["PendingManualApproval", "Approved"]}],
        "Steps": [{"Name": "gate", "Type": "Condition", "Arguments": {
            "Conditions": [{"Type": "GreaterThanOrEqualTo", "LeftValue": {"Get": "Parameters.Auc"},
                            "RightValue": 0.8}],
            "IfSteps": [], "ElseSteps": [{"Name": "failed", "Type": "Fail",
                                          "Arguments": {"ErrorMessage": message}}]}}]}


def test_everything_that_cannot_run_is_reported_at_once_naming_the_step():
    definition = {"Parameters": [], "Steps": [
        {"Name": "fit", "Type": "Training", "Arguments": {}},
        processing("stream", ProcessingInputs=[{"InputName": "data", "S3Input": {
            "S3Uri": "s3://b/d/", "LocalPath": "/opt/ml/processing/input/data", "S3DataType": "S3Prefix",
            "S3InputMode": "Pipe"}}], Environment={"X": {"Std:Concat": ["a"]}}),
        {"Name": "check", "Type": "Condition", "Arguments": {"Conditions": [{"Type": "Between"}]}},
    ]}
    with pytest.raises(UnsupportedError) as raised:
        load_definition(definition)
    text = str(raised.value)
    assert "step fit: step type 'Training'" in text
    assert "step stream: input data: S3InputMode 'Pipe'" in text and "step stream: expression Std:Concat" in text
    assert "step check: condition type 'Between'" in text


def test_parameters_are_typed_and_checked():
    definition = load_definition(gate_definition())
    assert parameter_values(definition, {"Auc": "0.9"})["Auc"] == 0.9
    with pytest.raises(PipelineError, match="unknown pipeline parameter.*Nope.*declares Auc, Approval"):
        parameter_values(definition, {"Nope": 1})
    with pytest.raises(PipelineError, match="is not one of PendingManualApproval, Approved"):
        parameter_values(definition, {"Approval": "Maybe"})
    with pytest.raises(PipelineError, match="not a valid float"):
        parameter_values(definition, {"Auc": "high"})


@pytest.mark.parametrize(("auc", "status"), [(0.5, "Failed"), (0.9, "Succeeded")])
def test_a_condition_runs_its_branch_and_a_fail_step_fails_the_execution_with_its_message(tmp_path, auc, status):
    definition = load_definition(gate_definition())
    lines = []
    execution = execute(definition, pipeline="p", parameters=parameter_values(definition, {"Auc": auc}),
                        aws=Aws(endpoint=None, region="us-east-1"), storage=Storage(None), folder=tmp_path,
                        cache=None, say=lines.append)
    assert execution.status == status
    assert execution.steps["gate"].status == "Succeeded"
    if status == "Failed":
        assert execution.reason == "auc 0.5 is below 0.8" and execution.steps["failed"].status == "Failed"
    else:
        assert execution.steps["failed"].status == "NotStarted"
    assert (tmp_path / execution.id / "execution.json").is_file()


def test_cache_key_is_sagemakers_attributes_and_never_the_inputs_content():
    args = processing("s")["Arguments"]
    key = cache_key("p", "s", "Processing", args)
    moved = {**args, "ProcessingOutputConfig": {"Outputs": [{"OutputName": "o", "S3Output": {"S3Uri": "s3://x"}}]},
             "ProcessingResources": {"ClusterConfig": {"InstanceCount": 4}}}
    assert cache_key("p", "s", "Processing", moved) == key                     # not part of SageMaker's key
    assert cache_key("p", "s", "Processing", {**args, "Environment": {"A": "1"}}) != key
    assert parse_duration("P30D") == timedelta(days=30) and parse_duration("T16m") == timedelta(minutes=16)
    assert parse_duration(None) is None
    with pytest.raises(PipelineError, match="ISO 8601"):
        parse_duration("soon")


def test_the_container_command_runs_here(tmp_path):
    root = tmp_path / "algo-1"
    script = root / "processing" / "input" / "code" / "run.py"
    script.parent.mkdir(parents=True)
    script.write_text('print("a job")\n')
    base = str(paths.SAGEMAKER_ROOT)
    args = {"AppSpecification": {"ContainerEntrypoint": ["python3", f"{base}/processing/input/code/run.py"],
                                 "ContainerArguments": ["--out", f"{base}/processing/output/x", f"--y={base}/config",
                                                        "/opt/mlx", "plain"]}}
    assert command(args, root) == [sys.executable, str(script), "--out",
                                   f"{root}/processing/output/x", f"--y={root}/config", "/opt/mlx", "plain"]


def test_s3_prefix_local_names():
    assert local_name("runs/x/explore/output", "runs/x/explore/output/videos.csv") == "videos.csv"
    assert local_name("data/", "data/part_0/a.mp4") == "part_0/a.mp4"
    assert local_name("models/m.tar.gz", "models/m.tar.gz") == "m.tar.gz"


def test_a_step_is_cached_when_it_succeeds_with_its_outputs_saved_first(tmp_path):
    """pipeline-local's moto server keeps S3 in memory: the objects a step wrote are saved (persist) before
    the record that points at them, so an execution killed later still leaves its finished steps reusable."""
    from pipelines.local.cache import StepCache

    seen = []
    cache = StepCache(tmp_path / "cache", persist=lambda: seen.append(cache.lookup("p", "extract", "k", None)))
    cache.store("p", "extract", "k", {"execution_id": "e1", "properties": {}})
    assert seen == [None]                                   # saved before the record existed
    assert cache.lookup("p", "extract", "k", None)["execution_id"] == "e1"
