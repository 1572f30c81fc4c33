"""Entry point of the scheduled monitoring job: one window of an endpoint's capture, as ``deepfake monitor``.

EventBridge Scheduler starts a SageMaker Processing job on the deployment
stack's schedule (``deploy/endpoint-config-template.yml``) with
``python3 monitor_step.py --until <scheduled time> --since 1h --align hour ...``,
from the code input that holds this file, its requirements and the kit
(``bundle.build_script_bundle``). It installs them (as ``run_step.py`` does),
then runs :func:`deepfake.monitoring.monitor.monitor` on the endpoint's S3
capture against the served model and the evaluation that gated it, writes
``monitoring.json``, ``monitoring.html`` and ``requests.csv`` under
``<out-dir>/<yyyy>/<mm>/<dd>/<hh>/`` (the job uploads them to the stage's
monitoring prefix), and puts the window's figures and its number of violations
into CloudWatch, where the stack's alarm watches them.

Violations are a result, not a failure: the job completes, says
``CompletedWithViolations: ...`` in its exit message (as Model Monitor's jobs
do) and the alarm fires. It fails (non-zero) only when it cannot monitor:
unreadable settings, a model without its evaluation, AWS refusing a call.
Only the standard library is imported before the install.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

if __package__:
    from . import run_step
else:                                                # run as a script from the code input
    import run_step

log = logging.getLogger("monitor_step")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="monitor_step.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--capture", required=True, help="the endpoint's S3 capture prefix (<destination>/<endpoint>/)")
    parser.add_argument("--model", required=True, help="the served model.tar.gz (the model package's ModelDataUrl)")
    parser.add_argument("--evaluation", required=True, help="the S3 prefix of the evaluation that gated it")
    parser.add_argument("--until", required=True, help="window end: the schedule's time, ISO 8601")
    parser.add_argument("--since", default="1h", help="window start, or its span before --until (1h, 24h)")
    parser.add_argument("--align", default="hour", choices=["hour", "day", "none"],
                        help="move --until back to the start of its hour or day (a complete window)")
    parser.add_argument("--out-dir", required=True, type=Path, help="the job's output folder")
    parser.add_argument("--endpoint-name", required=True, help="the CloudWatch dimension of the metrics")
    parser.add_argument("--namespace", default="", help="CloudWatch namespace of the metrics; empty: none published")
    parser.add_argument("--ground-truth", default="", help="S3 prefix of ground-truth labels; empty: none")
    parser.add_argument("--settings", default="", help="the checks' limits, KEY=VALUE,KEY=VALUE (MonitorConfig)")
    parser.add_argument("--no-install", dest="install", action="store_false",
                        help="use the kit already installed (local runs and tests)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    failed = run_step.start("monitoring", args.install)
    if failed:
        return failed
    from botocore.exceptions import BotoCoreError, ClientError

    from deepfake.core.errors import DeepfakeError

    try:
        return run(args)
    except DeepfakeError as exc:
        return run_step.fail(f"monitoring: {exc}", run_step.EXIT_CONFIG)
    except (BotoCoreError, ClientError) as exc:
        return run_step.fail(f"monitoring: AWS call failed: {exc}", run_step.EXIT_NOTEBOOK)


def run(args: argparse.Namespace) -> int:
    from deepfake.monitoring.checks import MonitorConfig
    from deepfake.monitoring.monitor import monitor
    from deepfake.monitoring.sources import parse_window

    config = MonitorConfig.from_dict(settings(args.settings))
    window = parse_window(args.since, args.until, align=None if args.align == "none" else args.align)
    folder = args.out_dir / f"{window.until:%Y/%m/%d/%H}"
    result = monitor(args.capture, args.model, window, folder, evaluation=args.evaluation,
                     ground_truth=args.ground_truth or None, config=config)
    counts = result.summary["counts"]
    log.info("window %s to %s: %d request(s), %d scored, %d no face, %d error(s); report %s",
             window.since.isoformat(), window.until.isoformat(), counts["requests"], counts["ok"],
             counts["no_face"], counts["error"], result.report_path)
    if args.namespace:
        import boto3

        from deepfake.monitoring.metrics import publish

        n = publish(boto3.client("cloudwatch"), result.summary, args.endpoint_name, datetime.now(timezone.utc),
                    args.namespace)
        log.info("published %d metric(s) to CloudWatch namespace %s", n, args.namespace)
    found = result.violations
    message = (f"CompletedWithViolations: {'; '.join(v['description'] for v in found)}" if found
               else "Completed: no violation")
    log.info("%s", message)
    run_step.exit_message(message)
    return 0


def settings(text: str) -> dict[str, str]:
    """``KEY=VALUE,KEY=VALUE`` (the template's one string parameter) as a dict."""
    from deepfake.core.errors import ConfigError

    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--settings {text!r}: {item!r} is not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


if __name__ == "__main__":
    sys.exit(main())
