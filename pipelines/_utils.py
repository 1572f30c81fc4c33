"""What the console scripts share: loading a pipeline module, parsing ``--kwargs`` and
``--tags``, SDK settings that keep a definition offline, and one-line errors.

The interface is the SageMaker project template's (``get_pipeline_driver``,
``convert_struct``, ``get_pipeline_custom_tags``), with the mistakes a user makes on
the command line (bad JSON, an unknown key, no role) reported in one line, exit 2.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deepfake.core.errors import DeepfakeError, PipelineError

EXIT_FAILED = 1                  # AWS refused a call, or the execution failed
EXIT_USAGE = 2                   # bad arguments: nothing was sent to AWS
DEFAULT_REGION = "us-east-1"     # only when neither --kwargs nor the environment names one
# Keys of --kwargs consumed here rather than by get_pipeline (project templates pass them).
EXTRA_KEYS = ("sagemaker_project_arn",)
# SDK defaults file that turns telemetry off: the SDK would otherwise call STS and S3
# from every step it builds, which a definition made without AWS access must not do.
SDK_CONFIG = "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
# Modules of the SDK (3.27) that call sagemaker.core.config.config.validate_sagemaker_config by that name.
SDK_CONFIG_VALIDATORS = ("sagemaker.core.config.config", "sagemaker.core.helper.session_helper",
                         "sagemaker.core.local.local_session", "sagemaker.core.utils.intelligent_defaults_helper")
_QUIET = {"botocore": logging.WARNING, "sagemaker": logging.WARNING, "sagemaker.config": logging.WARNING,
          "papermill": logging.WARNING,
          # "Popping out 'ProcessingJobName' ...": the service names jobs itself, as it should.
          "sagemaker.core.workflow.utilities": logging.ERROR, "sagemaker.mlops.workflow.model_step": logging.ERROR}


def job_failure(description: dict[str, Any], log: str) -> list[str]:
    """A failed Processing job (its DescribeProcessingJob response) in lines a user can act on.

    SageMaker's reasons for a failed step and its job are generic ("AlgorithmError: See job logs
    for more information"); what failed is in the job's exit message, where the kit's entry points
    (``run_step.py``, ``score_step.py``) write the failing cell or call, the error and the S3 URI of
    the executed notebook. ``log`` says where the job's log is.
    """
    name = description.get("ProcessingJobName", "")
    status = description.get("FailureReason") or description.get("ProcessingJobStatus", "")
    lines = [f"processing job {name}: {status}".rstrip()]
    message = (description.get("ExitMessage") or "").strip()
    if message:
        lines += ["exit message:", *(f"  {line}" for line in message.splitlines())]
    elif status.startswith("AlgorithmError"):
        lines.append("no exit message: the container ended before writing one (killed, out of memory?)")
    return [*lines, f"log: {log}"]


def convert_struct(str_struct: str | None) -> Any:
    """Parse a JSON argument; None and the empty string give None."""
    if not str_struct:
        return None
    try:
        return json.loads(str_struct)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"not valid JSON ({exc.msg} at character {exc.pos}): {str_struct}") from None


def parse_kwargs(texts: str | Sequence[str] | None) -> dict[str, Any]:
    """``--kwargs``: JSON objects of ``get_pipeline`` arguments, merged in order (a later key wins), so a
    build can add an account's settings (VPC, KMS, package index) to the project's in a second ``--kwargs``;
    an empty one adds nothing."""
    kwargs: dict[str, Any] = {}
    for text in [texts] if isinstance(texts, str) or texts is None else texts:
        try:
            value = convert_struct(text) or {}
        except PipelineError as exc:
            raise PipelineError(f"--kwargs is {exc}") from None
        if not isinstance(value, dict):
            raise PipelineError(f"--kwargs must be a JSON object of get_pipeline arguments; got {text}")
        kwargs.update(value)
    return kwargs


def check_kwargs(kwargs: dict[str, Any], get_pipeline: Callable[..., Any]) -> None:
    """Reject a key that ``get_pipeline`` (or this module) does not take, listing those it does: its named
    parameters and, for its ``**kwargs``, the names in its ``extra_keys`` (without them, any key goes there)."""
    signature = inspect.signature(get_pipeline)
    extra = getattr(get_pipeline, "extra_keys", None)
    if extra is None and any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    known = [n for n, p in signature.parameters.items() if n != "sagemaker_session" and p.kind is not p.VAR_KEYWORD]
    known += [*(extra or ()), *EXTRA_KEYS]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise PipelineError(f"--kwargs has unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")


def pipeline_arguments(module: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` checked against ``module.get_pipeline``, less the keys consumed here."""
    check_kwargs(kwargs, module.get_pipeline)
    return {k: v for k, v in kwargs.items() if k not in EXTRA_KEYS}


def parse_tags(text: str | None) -> list[dict[str, str]]:
    """``--tags`` as ``[{"Key": ..., "Value": ...}]``."""
    try:
        tags = convert_struct(text) or []
    except PipelineError as exc:
        raise PipelineError(f"--tags is {exc}") from None
    if not isinstance(tags, list) or not all(
            isinstance(t, dict) and set(t) == {"Key", "Value"} and all(isinstance(v, str) for v in t.values())
            for t in tags):
        raise PipelineError(f'--tags must be a JSON list of {{"Key": "...", "Value": "..."}}; got {text}')
    return tags


def resolve_role(kwargs: dict[str, Any], role_arn: str | None) -> str:
    """One role for the steps and the pipeline: ``--role-arn`` or ``role`` in ``--kwargs``."""
    role = kwargs.get("role") or role_arn
    if not role:
        raise PipelineError("missing role: pass --role-arn ARN (the SageMaker execution role; "
                            "$SAGEMAKER_PIPELINE_ROLE_ARN in CodeBuild) or role in --kwargs")
    kwargs["role"] = role
    return role


def prepare_sdk(region: str | None) -> str:
    """Settings the SDK reads at import and at session creation; returns the region."""
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    os.environ.setdefault("AWS_DEFAULT_REGION", region)     # `import sagemaker` fails without one
    if "SAGEMAKER_USER_CONFIG_OVERRIDE" not in os.environ:
        config = Path(tempfile.gettempdir()) / "deepfake-kit-sagemaker-config.yaml"
        if not config.is_file() or config.read_text() != SDK_CONFIG:
            config.write_text(SDK_CONFIG)
        os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(config)
    # Before the SDK's import-time logging.basicConfig(INFO), so ours wins.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for name, level in _QUIET.items():
        logging.getLogger(name).setLevel(level)
    warnings.filterwarnings("ignore", message="Running within a PipelineSession")
    return region


def validate_sdk_config_once() -> None:
    """The SDK checks its config against its JSON schema at every setting it looks up (``jsonschema.validate``,
    which first checks the schema itself): 112 times for one definition of this pipeline, seconds each on
    a busy machine and most of the time a definition takes. Check with one compiled validator instead:
    the same schema, the same errors."""
    import importlib

    import jsonschema
    from sagemaker.core.config import config_manager

    schema = config_manager.SAGEMAKER_PYTHON_SDK_CONFIG_SCHEMA
    validator = jsonschema.validators.validator_for(schema)(schema)

    def validate(sagemaker_config: dict | None = None) -> None:
        error = jsonschema.exceptions.best_match(validator.iter_errors(sagemaker_config))
        if error is not None:
            raise error

    config_manager.SageMakerConfig.validate_sagemaker_config = staticmethod(validate)
    for name in SDK_CONFIG_VALIDATORS:                 # the modules that imported the function itself
        module = importlib.import_module(name)
        if hasattr(module, "validate_sagemaker_config"):
            module.validate_sagemaker_config = validate


def get_pipeline_custom_tags(module_name: str, kwargs: dict[str, Any], tags: list[dict[str, str]]
                             ) -> list[dict[str, str]]:
    """The module's project tags added to ``tags`` when it defines ``get_pipeline_custom_tags``."""
    module = load_module(module_name)
    if not hasattr(module, "get_pipeline_custom_tags"):
        return tags
    return module.get_pipeline_custom_tags(tags, kwargs.get("region"), kwargs.get("sagemaker_project_arn"))


def load_module(module_name: str) -> Any:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise PipelineError(f"--module-name {module_name}: cannot import {exc.name}") from None
    if not callable(getattr(module, "get_pipeline", None)):
        raise PipelineError(f"--module-name {module_name} has no get_pipeline function")
    return module


def main_guard(prog: str, body: Callable[[], int]) -> int:
    """Run a console script: a known error is one line on stderr, never a traceback."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        return body()
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("sagemaker", "boto3", "botocore"):
            print(f"{prog}: error: {exc.name} is not installed; install the kit with its AWS extra: "
                  "pip install -e '.[aws]'", file=sys.stderr)
            return EXIT_USAGE
        raise
    except DeepfakeError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ClientError, BotoCoreError) as exc:
        print(f"{prog}: AWS error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
