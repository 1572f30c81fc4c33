"""``get-pipeline-definition``: print the pipeline definition JSON, without touching AWS.

The code is hashed locally and its S3 URIs computed, not uploaded; nothing calls
AWS unless ``--upload`` is given, so the definition can be built and reviewed
(or diffed in CI) on a machine with no AWS account. It needs the role and the
bucket, which end up in the definition.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines._utils import (
    load_module,
    main_guard,
    parse_kwargs,
    pipeline_arguments,
    prepare_sdk,
    resolve_role,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="get-pipeline-definition", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--module-name", required=True,
                        help="module whose get_pipeline builds the pipeline, e.g. pipelines.deepfake.pipeline")
    parser.add_argument("-f", "--file-name", default=None, type=Path,
                        help="write the definition to this file instead of stdout")
    parser.add_argument("-kwargs", "--kwargs", action="append", default=None,
                        help='JSON object of get_pipeline arguments: {"default_bucket": ..., "region": ...}; '
                             "repeatable, merged in order (a later key wins)")
    parser.add_argument("-role-arn", "--role-arn", default=None,
                        help="IAM role the steps run as (or role in --kwargs)")
    parser.add_argument("--upload", action="store_true",
                        help="upload the step code to S3 as run-pipeline does (needs AWS access)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return main_guard("get-pipeline-definition", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    kwargs = parse_kwargs(args.kwargs)
    resolve_role(kwargs, args.role_arn)
    kwargs["region"] = prepare_sdk(kwargs.get("region"))
    module = load_module(args.module_name)
    if "upload_code" in inspect.signature(module.get_pipeline).parameters:
        kwargs.setdefault("upload_code", args.upload)
    pipeline = module.get_pipeline(**pipeline_arguments(module, kwargs))
    text = json.dumps(json.loads(pipeline.definition()), indent=2, sort_keys=True) + "\n"
    if args.file_name:
        args.file_name.parent.mkdir(parents=True, exist_ok=True)
        args.file_name.write_text(text)
        print(f"definition of {pipeline.name} written to {args.file_name}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
