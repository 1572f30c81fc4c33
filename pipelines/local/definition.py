"""A pipeline definition (the JSON ``get-pipeline-definition`` prints and ``run-pipeline`` upserts), read
and checked before anything runs.

Everything the local executor cannot run is found here, at once, and reported
in one :class:`~pipelines.local.expressions.UnsupportedError` naming each thing
and the step it is in: a step type, an expression, a condition, an input or
output feature. What it runs but cannot emulate (retry policies for SageMaker
capacity errors, experiment tracking of the execution, instance types) is
returned as notes for the report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deepfake.core.errors import PipelineError
from pipelines.local.expressions import (
    CONDITIONS,
    EXECUTION_VARIABLES,
    FUNCTIONS,
    UnsupportedError,
)

STEP_TYPES = ("Processing", "Condition", "Fail", "RegisterModel")
PARAMETER_TYPES: Mapping[str, type] = {"String": str, "Integer": int, "Float": float, "Boolean": bool}
_INPUT_FEATURES = {"S3DataType": ("S3Prefix",), "S3InputMode": ("File",), "S3CompressionType": ("None",),
                   "S3DataDistributionType": ("FullyReplicated", "ShardedByS3Key")}
_UPLOAD_MODES = ("EndOfJob", "Continuous")


@dataclass(frozen=True)
class Step:
    name: str
    type: str
    spec: Mapping[str, Any]          # the step as the definition spells it
    depends_on: tuple[str, ...]      # DependsOn plus every step its arguments read
    branch_of: str | None = None     # the ConditionStep whose IfSteps/ElseSteps hold it

    @property
    def arguments(self) -> Mapping[str, Any]:
        return self.spec.get("Arguments", {})


@dataclass(frozen=True)
class Definition:
    raw: Mapping[str, Any]
    parameters: Mapping[str, Mapping[str, Any]]      # name -> its declaration
    steps: Mapping[str, Step]                        # every step, branch steps included, in definition order
    notes: tuple[str, ...] = ()                      # what runs but is not emulated (retries, experiments)

    def top_level(self) -> list[str]:
        return [s.name for s in self.steps.values() if s.branch_of is None]


def load_definition(source: str | os.PathLike[str] | Mapping[str, Any]) -> Definition:
    """Read a definition file (or a parsed one) and check that every part of it can run here."""
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        path = Path(source)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PipelineError(f"pipeline definition {path} does not exist; build it with "
                                "get-pipeline-definition --file-name") from None
        except json.JSONDecodeError as exc:
            raise PipelineError(f"pipeline definition {path} is not JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("Steps"), list):
        raise PipelineError("a pipeline definition is a JSON object with a Steps list")
    steps: dict[str, Step] = {}
    for spec, parent in _walk_steps(raw["Steps"], None):
        if spec.get("Name") in steps:
            raise PipelineError(f"step name {spec.get('Name')!r} is used twice")
        steps[spec["Name"]] = Step(spec["Name"], spec.get("Type", ""), spec, _depends_on(spec, parent), parent)
    parameters = {p["Name"]: p for p in raw.get("Parameters", [])}
    definition = Definition(raw=raw, parameters=parameters, steps=steps)
    return replace(definition, notes=tuple(check_supported(definition)))


def _walk_steps(specs: list[Any], parent: str | None) -> Iterator[tuple[dict[str, Any], str | None]]:
    for spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("Name"), str):
            raise PipelineError(f"a step of the definition has no Name: {str(spec)[:200]}")
        yield spec, parent
        if spec.get("Type") == "Condition":
            for branch in ("IfSteps", "ElseSteps"):
                yield from _walk_steps(spec.get("Arguments", {}).get(branch, []), spec["Name"])


def _depends_on(spec: Mapping[str, Any], parent: str | None) -> tuple[str, ...]:
    arguments = {k: v for k, v in spec.get("Arguments", {}).items() if k not in ("IfSteps", "ElseSteps")}
    found = list(spec.get("DependsOn", [])) + sorted(step_references(arguments))
    if parent:
        found.append(parent)
    return tuple(dict.fromkeys(n for n in found if n != spec["Name"]))


def step_references(value: Any) -> set[str]:
    """Names of the steps whose properties or property files ``value`` reads."""
    return {ref.split(".")[1] for ref in _gets(value) if ref.startswith("Steps.") and ref.count(".") >= 2}


def _gets(value: Any) -> Iterator[str]:
    if isinstance(value, list):
        for v in value:
            yield from _gets(v)
    elif isinstance(value, dict):
        if len(value) == 1 and "Get" in value:
            yield str(value["Get"])
            return
        for v in value.values():
            yield from _gets(v)


def parameter_values(definition: Definition, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Each parameter's value for an execution: the override, else its default, typed and checked."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(definition.parameters))
    if unknown:
        raise PipelineError(f"unknown pipeline parameter(s) {', '.join(unknown)}; the definition declares "
                            f"{', '.join(definition.parameters) or 'none'}")
    values = {}
    for name, decl in definition.parameters.items():
        kind = PARAMETER_TYPES.get(decl.get("Type", "String"))
        if kind is None:
            raise UnsupportedError(f"parameter {name} has type {decl.get('Type')!r}; supported: "
                                   f"{', '.join(PARAMETER_TYPES)}")
        if name not in overrides and "DefaultValue" not in decl:
            raise PipelineError(f"pipeline parameter {name} has no default: give it with --parameters")
        values[name] = _typed(name, overrides.get(name, decl.get("DefaultValue")), kind)
        enum = decl.get("EnumValues")
        if enum and values[name] not in enum:
            raise PipelineError(f"pipeline parameter {name}={values[name]!r} is not one of {', '.join(enum)}")
    return values


def _typed(name: str, value: Any, kind: type) -> Any:
    """``value`` as the parameter's type (the command line gives text); bools are never numbers."""
    try:
        if kind is bool and str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        if kind is int and not isinstance(value, bool) and float(value).is_integer():
            return int(float(value))
        if kind is float and not isinstance(value, bool):
            return float(value)
        if kind is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    raise PipelineError(f"pipeline parameter {name}={value!r} is not a valid {kind.__name__}")


def check_supported(definition: Definition) -> list[str]:
    """Raise one UnsupportedError listing everything that cannot run; return notes on what is not emulated."""
    problems: list[str] = []
    notes: list[str] = []
    for step in definition.steps.values():
        where = f"step {step.name}"
        if step.type not in STEP_TYPES:
            problems.append(f"{where}: step type {step.type!r} (the local executor runs {', '.join(STEP_TYPES)})")
            continue
        problems += [f"{where}: {p}" for p in _expression_problems(step.arguments)]
        problems += [f"{where}: {p}" for p in _reference_problems(step, definition)]
        if step.type == "Processing":
            problems += [f"{where}: {p}" for p in _processing_problems(step.arguments)]
        if step.type == "Condition":
            problems += [f"{where}: {p}" for p in _condition_problems(step.arguments.get("Conditions", []))]
    if problems:
        raise UnsupportedError("the local executor cannot run this definition:\n  " + "\n  ".join(problems))
    retried = [s.name for s in definition.steps.values() if s.spec.get("RetryPolicies")]
    if retried:
        notes.append(f"retry policies ({', '.join(retried)}) are not applied: no SageMaker capacity or "
                     "service errors happen here")
    for key in ("PipelineExperimentConfig", "MlflowConfig"):
        if definition.raw.get(key):
            notes.append(f"{key} is not emulated: no experiment or MLflow run is created for the execution")
    return notes


def _expression_problems(value: Any) -> list[str]:
    problems = []
    if isinstance(value, list):
        for v in value:
            problems += _expression_problems(v)
    elif isinstance(value, dict):
        keys = list(value)
        if len(keys) == 1 and (keys[0] in FUNCTIONS or keys[0].startswith("Std:")):
            if keys[0] not in FUNCTIONS:
                problems.append(f"expression {keys[0]} (supported: {', '.join(FUNCTIONS)})")
            elif keys[0] == "Get":
                problems += _get_problems(str(value["Get"]))
        for v in value.values():
            problems += _expression_problems(v)
    return problems


def _get_problems(reference: str) -> list[str]:
    root, _, rest = reference.partition(".")
    if root not in ("Parameters", "Execution", "Steps"):
        return [f"{{Get: {reference}}} (supported roots: Parameters, Execution, Steps)"]
    if root == "Execution" and rest not in EXECUTION_VARIABLES:
        return [f"execution variable {rest} (supported: {', '.join(EXECUTION_VARIABLES)})"]
    return []


def _reference_problems(step: Step, definition: Definition) -> list[str]:
    problems = [f"reads step {name!r}, which the definition does not have"
                for name in step.depends_on if name not in definition.steps]
    for ref in _gets(step.arguments):
        root, _, rest = ref.partition(".")
        if root == "Parameters" and rest not in definition.parameters:
            problems.append(f"{{Get: {ref}}}: no such pipeline parameter")
    return problems


def _processing_problems(arguments: Mapping[str, Any]) -> list[str]:
    problems = []
    for item in arguments.get("ProcessingInputs", []):
        name = item.get("InputName")
        if "S3Input" not in item:
            problems.append(f"input {name}: only S3Input is supported (not {', '.join(k for k in item if k != 'InputName')})")
            continue
        for key, allowed in _INPUT_FEATURES.items():
            value = item["S3Input"].get(key, allowed[0])
            if value not in allowed:
                problems.append(f"input {name}: {key} {value!r} (supported: {', '.join(allowed)})")
    for item in arguments.get("ProcessingOutputConfig", {}).get("Outputs", []):
        name = item.get("OutputName")
        if "S3Output" not in item:
            problems.append(f"output {name}: only S3Output is supported")
        elif item["S3Output"].get("S3UploadMode", "EndOfJob") not in _UPLOAD_MODES:
            problems.append(f"output {name}: S3UploadMode {item['S3Output'].get('S3UploadMode')!r}")
    if "ClusterConfig" not in arguments.get("ProcessingResources", {}):
        problems.append("ProcessingResources.ClusterConfig is missing")
    return problems


def _condition_problems(conditions: list[Any]) -> list[str]:
    problems = []
    for spec in conditions:
        kind = spec.get("Type") if isinstance(spec, dict) else None
        if kind not in CONDITIONS:
            problems.append(f"condition type {kind!r} (supported: {', '.join(CONDITIONS)})")
        elif kind == "Not":
            problems += _condition_problems([spec.get("Expression")])
        elif kind == "Or":
            problems += _condition_problems(spec.get("Conditions", []))
    return problems
