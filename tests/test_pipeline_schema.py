"""Both pipelines' definitions, validated against AWS's JSON schema of a pipeline definition.

moto accepts any definition; the service answers CreatePipeline with "Unable to parse pipeline
definition" for a member it does not know. AWS publishes a schema
(aws-sagemaker-mlops/sagemaker-model-building-pipeline-definition-JSON-schema). Its repository carries no
licence, so the schema is not copied into this one: ``make pipeline-schema`` fetches it at a pinned commit
and checks its sha256 (the GitHub workflow does, before the tests); without it these tests are skipped.

The schema lags the service in places. Each difference the kit's definitions have is either fixed (step
``DisplayName``s had spaces, which the schema's pattern refuses: they are hyphenated now) or listed below
with the evidence that the service accepts it; any other difference fails the test.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from aws_server import REGION, ROLE_ARN

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Path(os.environ.get("DEEPFAKE_PIPELINE_SCHEMA", ROOT / ".cache" / "pipeline-definition.schema.json"))
STEP_TYPES = {"Processing": "ProcessingStep", "Condition": "ConditionStep", "RegisterModel": "RegisterModelStep",
              "Fail": "FailStep"}
PARAMETER_TYPES = {"String": "StringParameter", "Integer": "IntegerParameter", "Float": "FloatParameter",
                   "Boolean": "BooleanParameter"}
SDK = "written by the SageMaker Python SDK (3.27, sagemaker-mlops) for every pipeline that uses it"
# (where, what the schema says) -> why the service accepts it anyway
ACCEPTED = {
    (r"^PipelineExperimentConfig$", "top-level"):
        f"{SDK}; documented in the Developer Guide (Pipelines: experiment tracking, PipelineExperimentConfig)",
    (r"^MlflowConfig$", "top-level"): f"{SDK} (null when no MLflow resource is configured)",
    (r"^Parameters/\d+$", "'EnumValues' was unexpected"):
        f"{SDK} for ParameterString(enum_values=...), the documented way to restrict a parameter",
    (r"^Steps/\d+/RetryPolicies/\d+/ExceptionType$", "is not of type 'string'"):
        f"{SDK} (SageMakerJobStepRetryPolicy: a list of exception types); the Developer Guide's retry policy "
        "example has a list",
    (r"^Steps/\d+/RetryPolicies/\d+/ExceptionType$", "is not one of"):
        "the same list: each of its members is one of the schema's values",
    (r"/S3Uri$|/ModelDataUrl$|/ContainerArguments/\d+$|/ErrorMessage$", "is not valid under any of the given schemas"):
        "Std:Join / Std:JsonGet (the schema has no function but Get there): AWS's own examples (the abalone "
        "pipeline) join S3 URIs and read a property file with JsonGet in a condition and a FailStep message",
    (r"^Steps/\d+/Arguments/Conditions/\d+$", "is not valid under any of the given schemas"):
        "a JsonGet on the evaluation's property file: the abalone example's quality gate is this condition",
    (r"^Steps/\d+$", "'PropertyFiles' was unexpected"):
        "the SDK's ProcessingStep(property_files=...) and every AWS example with a quality gate",
    (r"/IfSteps/\d+/Arguments/InferenceSpecification/Containers/\d+$", "'Environment' was unexpected"):
        "a member of CreateModelPackage's ModelPackageContainerDefinition (the RegisterModel step's arguments are "
        "that request)",
    (r"/IfSteps/\d+/Arguments$", "were unexpected"):
        "CustomerMetadataProperties, ModelApprovalStatus, SkipModelValidation: members of the CreateModelPackage "
        "request, written by the SDK's ModelBuilder.register; ModelApprovalStatus is in every AWS example",
}

pytestmark = [pytest.mark.aws,
              pytest.mark.skipif(not SCHEMA.is_file(), reason=f"no pipeline-definition schema at {SCHEMA}: "
                                 "`make pipeline-schema` fetches it (it is not vendored: no licence)"),
              pytest.mark.filterwarnings("ignore:Running within a PipelineSession")]


def deviations(definition: dict, schema: dict) -> list[tuple[str, str]]:
    """(JSON path, message) of every place the definition breaks the schema, step by step by its type
    (the schema's oneOf over step types would report only that no type matched)."""
    import jsonschema

    def check(kind: str, instance: object, path: list) -> list[tuple[str, str]]:
        sub = {"$ref": f"#/definitions/{kind}", "definitions": schema["definitions"]}
        return [("/".join(map(str, path + list(e.absolute_path))), e.message)
                for e in jsonschema.Draft7Validator(sub).iter_errors(instance)]

    out = [(key, f"top-level {key}") for key in definition if key not in schema["properties"]]
    for i, parameter in enumerate(definition.get("Parameters", [])):
        out += check(PARAMETER_TYPES[parameter["Type"]], parameter, ["Parameters", i])

    def steps(items: list, path: list) -> None:
        nonlocal out
        for i, step in enumerate(items):
            if step["Type"] == "Condition":
                arguments = dict(step["Arguments"])
                branches = {name: arguments.pop(name, []) for name in ("IfSteps", "ElseSteps")}
                out += check("ConditionStep", {**step, "Arguments": {**arguments, "IfSteps": [], "ElseSteps": []}},
                             [*path, i])
                for name, branch in branches.items():
                    steps(branch, [*path, i, "Arguments", name])
            else:
                out += check(STEP_TYPES[step["Type"]], step, [*path, i])

    steps(definition["Steps"], ["Steps"])
    return out


def unexplained(found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(where, message) for where, message in found
            if not any(re.search(pattern, where) and fragment in message for pattern, fragment in ACCEPTED)]


@pytest.fixture(scope="module")
def schema():
    return json.loads(SCHEMA.read_text())


@pytest.mark.parametrize("module", ["pipelines.deepfake.pipeline", "pipelines.deepfake.scoring"])
def test_the_definition_follows_the_schema_but_where_the_service_is_known_to_accept_more(module, schema, monkeypatch):
    import importlib

    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
    get_pipeline = importlib.import_module(module).get_pipeline
    definition = json.loads(get_pipeline(region=REGION, role=ROLE_ARN, default_bucket="deepfake-schema",
                                         upload_code=False).definition())
    found = deviations(definition, schema)
    assert not unexplained(found), unexplained(found)
    assert not [f for f in found if f[0].endswith("DisplayName")]            # fixed, not accepted


def test_the_check_catches_what_the_service_refuses(schema):
    """A step's DisplayName with a space, and a member the schema does not know, are reported."""
    bad = {"Version": "2020-12-01", "Parameters": [], "Steps": [
        {"Name": "explore", "Type": "Fail", "DisplayName": "Data exploration", "Arguments": {"ErrorMessage": "x"},
         "Surprise": 1}]}
    found = unexplained(deviations(bad, schema))
    assert any(where == "Steps/0/DisplayName" for where, _ in found)
    assert any("Surprise" in message for _, message in found)
