"""Stage settings as frozen dataclasses with strict construction.

Each stage owns one config class deriving from :class:`StageConfig`. Building it
from a mapping (notebook parameters, JSON, CLI) rejects unknown keys and lists
the known ones, because a typo in a setting must never be silently ignored.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from deepfake.core.errors import ConfigError

C = TypeVar("C", bound="StageConfig")


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """Base class: ``from_dict`` is strict, ``to_dict`` is JSON-ready."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any], *, ignore: typing.Iterable[str] = ()) -> C:
        """Build the config; unknown keys (other than ``ignore``) raise ConfigError."""
        known = cls.field_names()
        skip = set(ignore)
        unknown = sorted(k for k in values if k not in known and k not in skip)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(unknown)} for {cls.__name__}; "
                f"known settings: {', '.join(known)}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {k: coerce_value(k, values[k], hints[k]) for k in known if k in values}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{cls.__name__}: {exc}") from exc

    @classmethod
    def from_namespace(cls: type[C], namespace: Mapping[str, Any]) -> C:
        """Pick this config's fields out of a namespace (a notebook's ``globals()``), after rejecting a
        parameter papermill injected that the notebook does not declare (:func:`check_injected`)."""
        check_injected(namespace)
        return cls.from_dict({k: namespace[k] for k in cls.field_names() if k in namespace})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self: C, **changes: Any) -> C:
        return type(self).from_dict({**self.to_dict(), **changes})


# papermill writes the parameters it is given into a cell of their own, right after the cell tagged
# ``parameters``, under this comment (papermill.parameterize_notebook).
INJECTED_HEADER = "# Parameters"


def check_injected(namespace: Mapping[str, Any]) -> None:
    """Raise ConfigError for a parameter papermill injected that the ``parameters`` cell does not declare.

    papermill only warns about one. Whoever runs the notebook (papermill, ``deepfake run``, SageMaker),
    the kernel's input history (IPython's ``In``) holds the parameters cell and, right after it, the
    injected cell; run interactively there is none and nothing to check.
    """
    history = namespace.get("In")
    if not isinstance(history, list):
        return
    for i in range(len(history) - 1, 0, -1):
        injected = _assigned(history[i], header=INJECTED_HEADER)
        if injected is None:
            continue
        declared = _assigned(history[i - 1])
        unknown = [name for name in injected if declared is not None and name not in declared]
        if unknown:
            raise ConfigError(f"this notebook has no parameter(s) {', '.join(unknown)} (injected by papermill); "
                              f"known parameters: {', '.join(declared or [])}")
        return


def _assigned(code: Any, header: str | None = None) -> list[str] | None:
    """The names a cell assigns, when it holds nothing but assignments (and starts with ``header``)."""
    if not isinstance(code, str) or (header is not None and code.lstrip().split("\n", 1)[0].strip() != header):
        return None
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    names = []
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            names += [t.id for t in node.targets]
        else:
            return None
    return names


def coerce_value(name: str, value: Any, hint: Any, *, what: str = "setting") -> Any:
    """Accept the values papermill, JSON and the CLI produce (str for numbers, list for tuple).

    The one coercion of the kit: stage configs and notebook parameters both use it.
    An unknown ``hint`` leaves the value as it is.
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        hint = inner[0] if len(inner) == 1 else hint
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
    try:
        if hint is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "1", "yes"):
                    return True
                if low in ("false", "0", "no"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if origin is tuple or hint is tuple:
            seq = json.loads(value) if isinstance(value, str) else value
            return tuple(seq)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} {name}={value!r} is not a valid {getattr(hint, '__name__', hint)}") from exc
    return value
