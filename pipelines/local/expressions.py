"""The expressions of a pipeline definition, evaluated as SageMaker Pipelines documents them.

A value in a step's arguments is either plain JSON or one of:

- ``{"Get": "Parameters.NAME"}``: the execution's value of a pipeline parameter;
- ``{"Get": "Execution.VARIABLE"}``: ``PipelineExecutionId``, ``PipelineExecutionArn``,
  ``PipelineName``, ``PipelineArn``, ``StartDateTime``, ``CurrentDateTime``;
- ``{"Get": "Steps.STEP.PATH"}``: a property of an earlier step (for a Processing step,
  its DescribeProcessingJob response: ``ProcessingOutputConfig.Outputs['name'].S3Output.S3Uri``);
- ``{"Std:Join": {"On": SEP, "Values": [...]}}``: the values as text, joined;
- ``{"Std:JsonGet": {"PropertyFile": {"Get": "Steps.STEP.PropertyFiles.NAME"}, "Path": P}}`` or
  ``{"Std:JsonGet": {"S3Uri": URI, "Path": P}}``: a value of a JSON document, ``P`` a JsonPath
  of keys and indices (``metrics.auc``, ``$.a[0]['b']``).

Conditions (a ConditionStep's ``Conditions``, all of which must hold): ``Equals``,
``GreaterThan``, ``GreaterThanOrEqualTo``, ``LessThan``, ``LessThanOrEqualTo``,
``In``, ``Not``, ``Or``. Anything else is an :class:`UnsupportedError` naming it.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from deepfake.core.errors import PipelineError

EXECUTION_VARIABLES = ("PipelineExecutionId", "PipelineExecutionArn", "PipelineName", "PipelineArn",
                       "StartDateTime", "CurrentDateTime")
FUNCTIONS = ("Get", "Std:Join", "Std:JsonGet")
COMPARISONS: Mapping[str, Callable[[Any, Any], bool]] = {
    "Equals": operator.eq, "GreaterThan": operator.gt, "GreaterThanOrEqualTo": operator.ge,
    "LessThan": operator.lt, "LessThanOrEqualTo": operator.le,
}
CONDITIONS = (*COMPARISONS, "In", "Not", "Or")

_TOKEN = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_:-]*)|\[\s*(\d+)\s*\]|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]")


class UnsupportedError(PipelineError):
    """The definition uses an expression, condition or step type the local executor does not run."""


class ExpressionError(PipelineError):
    """An expression cannot be evaluated (unknown parameter, a step that has not run, a missing key)."""


@dataclass
class Scope:
    """What expressions read: parameter values, execution variables, step properties, property files."""

    parameters: Mapping[str, Any]
    execution: Mapping[str, Any]
    properties: dict[str, Any] = field(default_factory=dict)            # step name -> its properties
    property_file: Callable[[str, str], Any] | None = None              # (step, file name) -> JSON document
    read_json: Callable[[str], Any] | None = None                       # S3 URI -> JSON document


def evaluate(value: Any, scope: Scope) -> Any:
    """``value`` with every expression in it replaced by its value."""
    if isinstance(value, list):
        return [evaluate(v, scope) for v in value]
    if not isinstance(value, dict):
        return value
    function = _function(value)
    if function == "Get":
        return get(value["Get"], scope)
    if function == "Std:Join":
        return join(value["Std:Join"], scope)
    if function == "Std:JsonGet":
        return json_get(value["Std:JsonGet"], scope)
    return {k: evaluate(v, scope) for k, v in value.items()}


def _function(value: Mapping[str, Any]) -> str | None:
    if len(value) != 1:
        return None
    (key,) = value
    if key in FUNCTIONS:
        return key
    if key.startswith("Std:"):
        raise UnsupportedError(f"expression {key} is not supported by the local executor; it runs "
                               f"{', '.join(FUNCTIONS)}")
    return None


def get(reference: str, scope: Scope) -> Any:
    root, _, rest = str(reference).partition(".")
    if root == "Parameters":
        if rest not in scope.parameters:
            raise ExpressionError(f"{{Get: {reference}}}: no pipeline parameter {rest!r}; the definition declares "
                                  f"{', '.join(scope.parameters) or 'none'}")
        return scope.parameters[rest]
    if root == "Execution":
        if rest not in EXECUTION_VARIABLES:
            raise UnsupportedError(f"{{Get: {reference}}}: execution variable {rest!r} is not supported; "
                                   f"supported: {', '.join(EXECUTION_VARIABLES)}")
        return scope.execution[rest]
    if root == "Steps":
        step, _, path = rest.partition(".")
        if step not in scope.properties:
            raise ExpressionError(f"{{Get: {reference}}}: step {step!r} has not run in this execution, so its "
                                  "properties do not exist yet; make the step depend on it")
        return property_path(scope.properties[step], path, reference)
    raise UnsupportedError(f"{{Get: {reference}}}: only Parameters.*, Execution.* and Steps.* are supported")


def property_path(document: Any, path: str, where: str) -> Any:
    """``Outputs['name'].S3Output.S3Uri`` of a properties document; a list is indexed by position or by
    the name of its items (``OutputName``, ``InputName``, ``Name``), as the SDK's properties are."""
    value = document
    for key in _tokens(path, where):
        if isinstance(value, list) and isinstance(key, str):
            named = [v for v in value if isinstance(v, dict) and key in (v.get("OutputName"), v.get("InputName"),
                                                                          v.get("Name"))]
            if not named:
                raise ExpressionError(f"{where}: no item named {key!r}")
            value = named[0]
        elif isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
            value = value[key]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            raise ExpressionError(f"{where}: {key!r} is not there (have {_keys(value)})")
    return value


def _tokens(path: str, where: str) -> Iterator[str | int]:
    pos = 0
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if not match or match.end() == pos:
            raise UnsupportedError(f"{where}: path syntax {path[pos:]!r} is not supported (keys, [n] and "
                                   "['key'] only: no wildcards, filters or recursive descent)")
        name, index, single, double = match.groups()
        yield int(index) if index is not None else next(v for v in (name, single, double) if v is not None)
        pos = match.end()


def _keys(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(map(str, value)) or "no keys"
    return f"a {type(value).__name__}"


def join(spec: Mapping[str, Any], scope: Scope) -> str:
    values = evaluate(spec.get("Values", []), scope)
    return str(spec.get("On", "")).join(as_text(v) for v in values)


def as_text(value: Any) -> str:
    """A value as SageMaker passes it in text: JSON spelling for booleans and null."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def json_get(spec: Mapping[str, Any], scope: Scope) -> Any:
    path = str(spec.get("Path", ""))
    if "PropertyFile" in spec:
        ref = spec["PropertyFile"]
        target = ref.get("Get", "") if isinstance(ref, dict) else str(ref)
        match = re.fullmatch(r"Steps\.([^.]+)\.PropertyFiles\.(.+)", target)
        if not match or scope.property_file is None:
            raise UnsupportedError(f"Std:JsonGet PropertyFile {ref!r}: expected {{Get: Steps.STEP.PropertyFiles.NAME}}")
        step, name = match.groups()
        document, where = scope.property_file(step, name), f"property file {name} of step {step}"
    elif "S3Uri" in spec:
        uri = evaluate(spec["S3Uri"], scope)
        if scope.read_json is None:
            raise UnsupportedError("Std:JsonGet S3Uri needs S3 access")
        document, where = scope.read_json(uri), str(uri)
    else:
        raise UnsupportedError(f"Std:JsonGet needs PropertyFile or S3Uri; got {', '.join(spec)}")
    json_path = path[1:] if path.startswith("$") else path
    return property_path(document, json_path.lstrip("."), f"Std:JsonGet {path!r} of {where}")


def condition(spec: Mapping[str, Any], scope: Scope) -> bool:
    """One condition of a ConditionStep, evaluated."""
    kind = spec.get("Type")
    if kind in COMPARISONS:
        left, right = evaluate(spec["LeftValue"], scope), evaluate(spec["RightValue"], scope)
        return COMPARISONS[kind](*_comparable(kind, left, right))
    if kind == "In":
        query = evaluate(spec["QueryValue"], scope)
        return any(query == v for v in evaluate(spec["Values"], scope))
    if kind == "Not":
        return not condition(spec["Expression"], scope)
    if kind == "Or":
        return any(condition(c, scope) for c in spec["Conditions"])
    raise UnsupportedError(f"condition type {kind!r} is not supported; supported: {', '.join(CONDITIONS)}")


def _comparable(kind: str, left: Any, right: Any) -> tuple[Any, Any]:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
    if numbers or kind == "Equals" or (isinstance(left, str) and isinstance(right, str)):
        return left, right
    raise ExpressionError(f"condition {kind} compares {left!r} ({type(left).__name__}) with {right!r} "
                          f"({type(right).__name__}); both sides must be numbers or both text")
