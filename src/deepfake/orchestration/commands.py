"""The ``deepfake`` subcommands: thin shells that resolve their inputs and call one module each.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from deepfake.core import paths
from deepfake.core.errors import DeepfakeError, ModelError
from deepfake.orchestration.registry import DEFAULT_GROUP, LocalRegistry
from deepfake.serving.capture import CaptureSettings, CaptureWriter
from deepfake.serving.predictor import Predictor, scoring_device
from deepfake.serving.server import THREADS_PER_WORKER, InferenceApp, make_app, run_server

log = logging.getLogger(__name__)


def _demo_data(args: argparse.Namespace) -> int:
    from deepfake.demo.build import build_demo_dataset
    from deepfake.demo.plan import DEFAULT_METHODS

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else DEFAULT_METHODS
    out = build_demo_dataset(args.out, n_videos=args.videos, seed=args.seed, force=args.force, methods=methods)
    print(f"demo dataset ready: {out}")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from deepfake.data.catalogs import LAYOUT_ATTR, describe_layout, load_catalog
    from deepfake.media.extraction import ExtractConfig
    from deepfake.stages.extract import extract_faces

    videos = load_catalog(args.catalog, args.data)
    print("\n".join(describe_layout(videos.attrs[LAYOUT_ATTR])))
    config = ExtractConfig.from_dict(dict(kv.split("=", 1) for kv in args.set))
    faces = extract_faces(videos, args.data, args.out, config)
    print(f"{len(faces)} rows written to {args.out}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from deepfake.orchestration.runner import run_pipeline

    return run_pipeline(
        data_dir=args.data, run_id=args.run_id, profile=args.profile, overrides=args.set,
        force=args.force, register=not args.no_register, group=args.group, threshold=args.threshold,
        model=args.model, gate_metric=args.gate_metric,
    )


def _calibrate(args: argparse.Namespace) -> int:
    from deepfake.orchestration.calibration import calibrate_command

    return calibrate_command(args)


def _registry(args: argparse.Namespace) -> int:

    return registry_command(args)


def _serve(args: argparse.Namespace) -> int:

    return serve_command(args)


def _predict(args: argparse.Namespace) -> int:

    return predict_command(args)


def _score(args: argparse.Namespace) -> int:
    from deepfake.serving.batch import parts_dir_for, score_folder, summary_markdown

    source, where = resolve_model(args.model, args.group)
    predictor = Predictor.from_path(source, device=scoring_device("auto"))
    print(f"model {predictor.version} from {where}; {args.workers} worker(s)", file=sys.stderr)
    _table, summary = score_folder(args.data, predictor, args.out, workers=args.workers)
    print(summary_markdown(summary), end="")
    print(f"predictions: {args.out} (parts kept in {parts_dir_for(args.out)} for a rerun to resume)")
    return 0


def _invoke(args: argparse.Namespace) -> int:

    return invoke_command(args)


def _monitor(args: argparse.Namespace) -> int:

    return monitor_command(args)


def resolve_model(model: str | os.PathLike[str] | None, group: str | None = None) -> tuple[Path, str]:
    """The artifact to load and where it came from: ``model`` itself, or the registry's latest approved.

    Raises RegistryError when ``model`` is None and ``group`` has no approved version.
    """
    if model:
        return paths.resolve(model), f"path {paths.resolve(model)}"
    from deepfake.orchestration.registry import DEFAULT_GROUP, LocalRegistry

    registry = LocalRegistry()
    mv = registry.latest_approved(group or DEFAULT_GROUP)
    return Path(mv.artifact), f"registry {mv.group} v{mv.version} ({registry.root})"


def predict_command(args: argparse.Namespace) -> int:
    """``deepfake predict VIDEO...``: one line per input; exit 1 if any input failed (others still scored)."""
    source, where = resolve_model(args.model, args.group)
    predictor = Predictor.from_path(source, device=scoring_device(args.device), background=True)  # torch loads
    # while the first video decodes
    print(f"model {predictor.version} from {where}; aggregation {predictor.aggregation}, "
          f"threshold {predictor.threshold:g}, temperature {predictor.rule.temperature:.3g}", file=sys.stderr)
    width = max(12, *(len(str(i)) for i in args.inputs))
    if not args.json:
        print(f"{'input':<{width}}  {'label':<5}  {'p_fake':>7}  {'frames':>6}  {'faces':>5}  status")
    failed = 0
    for item in args.inputs:
        try:
            result = predictor.predict_file(item)
        except ModelError:
            raise                       # the model itself cannot score: no input can, stop here
        except (DeepfakeError, OSError) as exc:
            failed += 1
            if args.json:
                print(json.dumps({"input": str(item), "status": "error", "label": None, "p_fake": None,
                                  "error": type(exc).__name__, "message": str(exc)}))
            else:
                print(f"{str(item):<{width}}  {'-':<5}  {'-':>7}  {'-':>6}  {'-':>5}  error: {exc}")
            continue
        if args.json:
            print(json.dumps({"input": str(item), **result}))
        else:
            p = "-" if result["p_fake"] is None else f"{result['p_fake']:.4f}"
            print(f"{str(item):<{width}}  {result['label'] or '-':<5}  {p:>7}  {result['frames_scored']:>6}  "
                  f"{result['faces_found']:>5}  {result['status']}")
    if failed:
        print(f"{failed} of {len(args.inputs)} input(s) could not be scored", file=sys.stderr)
    return 1 if failed else 0


def serve_command(args: argparse.Namespace) -> int:
    """``deepfake serve``: load the model once (on a GPU: once per worker), then serve it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    source, where = resolve_model(args.model, args.group)
    device = scoring_device(args.device)
    capture = _capture_writer(args)

    def build() -> InferenceApp:
        predictor = Predictor.from_path(source, device=device)
        app = make_app(predictor, capture=capture, async_output=args.async_output,
                       async_failure=args.async_failure)
        info = predictor.describe()
        log.info("model %s from %s on %s (aggregation %s, %d frames per video, detector %s); request limit %d "
                 "bytes", predictor.version, where, device, info["aggregation"], info["frames_per_video"],
                 info["detector"], app.max_payload)
        return app

    log.info("serving on http://%s:%d with %d worker(s) x %d threads", args.host, args.port, args.workers,
             THREADS_PER_WORKER)
    if capture is not None:
        log.info("capturing %d%% of requests (%s) to %s", capture.settings.sampling_percentage,
                 "requests and responses" if capture.settings.capture_input else "responses only",
                 capture.settings.root)
    run_server(build() if device == "cpu" else build, host=args.host, port=args.port, workers=args.workers,
               timeout=args.timeout)
    return 0


def _capture_writer(args: argparse.Namespace) -> CaptureWriter | None:
    """``--capture DIR`` and its options as a capture writer (None without ``--capture``)."""
    if not getattr(args, "capture", None):
        return None
    return CaptureWriter(CaptureSettings(destination=args.capture, endpoint=args.endpoint_name,
                                         sampling_percentage=args.capture_sampling,
                                         capture_input=args.capture_input))


def registry_command(args: argparse.Namespace) -> int:
    """``deepfake registry list|approve|reject``."""
    reg = LocalRegistry()
    group = args.group or DEFAULT_GROUP
    if args.action == "list":
        versions = reg.list(group)
        if args.json:
            print(json.dumps([asdict(v) for v in versions], indent=2))
            return 0
        if not versions:
            print(f"no versions in group {group!r} ({reg.root})")
            return 0
        runs = [str(v.source.get("run_id") or "-") for v in versions]
        width = max(3, *(len(r) for r in runs))
        print(f"{'version':>7}  {'status':<22} {'video_auc':>9}  {'run':<{width}}  {'sha256':<12}  {'created':<25} "
              "artifact")
        for v, run in zip(versions, runs, strict=True):
            auc = v.metrics.get("video_auc")
            auc_s = f"{auc:.4f}" if isinstance(auc, (int, float)) else "-"
            print(f"{v.version:>7}  {v.status:<22} {auc_s:>9}  {run:<{width}}  {v.sha256[:12]:<12}  {v.created:<25} "
                  f"{v.artifact}")
        return 0
    mv = reg.approve(group, args.version, args.description) if args.action == "approve" \
        else reg.reject(group, args.version, args.description)
    print(f"{group} v{mv.version}: {mv.status}")
    return 0


def monitor_command(args: argparse.Namespace) -> int:
    """``deepfake monitor``: exit 0 without a violation, 1 with one (a scheduler or CI acts on it)."""
    from deepfake.core.errors import ConfigError
    from deepfake.monitoring.checks import MonitorConfig
    from deepfake.monitoring.monitor import monitor
    from deepfake.monitoring.sources import parse_window
    from deepfake.monitoring.storage import is_s3

    try:
        config = MonitorConfig.from_dict(dict(kv.split("=", 1) for kv in args.set))
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"--set takes KEY=VALUE; got {args.set}") from None
    def here(location: str | None) -> str | None:
        """A local path from where the user stands; an s3:// URI as it is."""
        return location if location is None or is_s3(location) else str(Path(location).expanduser().resolve())

    model, evaluation = here(args.model), here(args.evaluation)
    if model is None:
        version = LocalRegistry().latest_approved(args.group or DEFAULT_GROUP)
        model = version.artifact
        if evaluation is None and version.source.get("evaluation"):
            evaluation = str(Path(version.source["evaluation"]).parent)
    result = monitor(here(args.capture) or "", model, parse_window(args.since, args.until), args.out,
                     evaluation=evaluation, ground_truth=here(args.ground_truth), config=config)
    summary = result.summary
    counts = summary["counts"]
    print(f"window {summary['window']['since']} to {summary['window']['until']}: {counts['requests']} request(s), "
          f"{counts['ok']} scored, {counts['no_face']} no face, {counts['error']} error(s), "
          f"{counts['unreadable']} unreadable; model {summary['model']['version']}")
    for check in summary["checks"]:
        print(f"  {check['status']:<9} {check['name']:<20} {check['reason']}")
    print(f"monitoring: {result.json_path}\nreport: {result.report_path}")
    if result.violations:
        print(f"{len(result.violations)} violation(s): {', '.join(v['check'] for v in result.violations)}",
              file=sys.stderr)
        return 1
    return 0


def invoke_command(args: argparse.Namespace) -> int:
    """``deepfake invoke``: one line per video sent; exit 1 if an answer was an error (the rest were sent)."""
    import tempfile

    from deepfake.core.errors import ConfigError
    from deepfake.core.vocabulary import VIDEO_TYPES
    from deepfake.media.encode import reencode
    from deepfake.serving.invoke import Target, invoke

    target = Target(url=args.url or (None if args.endpoint else "http://127.0.0.1:8080"), endpoint=args.endpoint)
    videos = invoke_inputs(args)
    scale_crf = _scale_crf(args.reencode) if args.reencode else None
    if args.labels:
        labelled = [(f"{args.id_prefix}{ident}", label) for ident, _, label in videos if label is not None]
        if not labelled:
            raise ConfigError("--labels needs videos with labels: give --data and --evaluation")
        Path(args.labels).parent.mkdir(parents=True, exist_ok=True)
        Path(args.labels).write_text("inference_id,label\n" + "".join(f"{i},{lab}\n" for i, lab in labelled))
    failed = 0
    with tempfile.TemporaryDirectory(prefix="deepfake-invoke-") as tmp:
        for ident, path, _ in videos:
            source = path
            if scale_crf is not None:
                source = reencode(path, Path(tmp) / f"{ident}.mp4", scale=scale_crf[0], crf=scale_crf[1])
            kind = next((t for t, suffix in VIDEO_TYPES.items() if suffix == Path(source).suffix.lower()), "video/mp4")
            status, answer = invoke(target, Path(source).read_bytes(), kind, f"{args.id_prefix}{ident}")
            failed += status != 200
            if args.json:
                print(json.dumps({"inference_id": f"{args.id_prefix}{ident}", "http_status": status, **answer}))
            else:
                p = answer.get("p_fake")
                print(f"{args.id_prefix}{ident}  {status}  {answer.get('status') or answer.get('error')}  "
                      f"{answer.get('label') or '-'}  {'-' if p is None else format(p, '.4f')}")
    print(f"{len(videos)} video(s) sent to {target.url or target.endpoint}"
          + (f", labels in {args.labels}" if args.labels else ""), file=sys.stderr)
    return 1 if failed else 0


def invoke_inputs(args: argparse.Namespace) -> list[tuple[str, Path, int | None]]:
    """``(inference id, file, label or None)`` of every video to send: the files given, then the videos of
    ``--evaluation`` (scored or not) found in ``--data``'s catalog, then ``--no-face`` videos without a face."""
    from deepfake.core.errors import ConfigError

    if args.no_face < 0:
        raise ConfigError(f"--no-face {args.no_face}: give a number of videos, 0 or more")
    videos: list[tuple[str, Path, int | None]] = [(Path(v).stem, Path(v).expanduser().resolve(), None)
                                                  for v in args.inputs]
    if bool(args.data) != bool(args.evaluation):
        raise ConfigError("--data and --evaluation go together: the dataset folder and the evaluation of its videos")
    if args.evaluation:
        from deepfake.data.catalogs import load_catalog
        from deepfake.data.manifest import read_manifest
        from deepfake.scoring.schema import read_evaluation

        evaluation = read_evaluation(args.evaluation)
        scored = read_manifest(Path(args.evaluation) / paths.VIDEO_PREDICTIONS, ["video_id"])
        wanted = [*scored["video_id"].astype(str), *(str(u["video_id"]) for u in evaluation["unscored_videos"])]
        catalog = load_catalog("auto", args.data).set_index("video_id")
        missing = [v for v in wanted if v not in catalog.index]
        if missing:
            raise ConfigError(f"{len(missing)} evaluated video(s) are not in {args.data} (e.g. {missing[0]}); "
                              "give the dataset folder the evaluation scored")
        videos += [(v, Path(args.data) / str(catalog.at[v, "path"]), int(catalog.at[v, "label"])) for v in wanted]
    if args.no_face:
        from deepfake.demo.face_sources import no_face_video

        videos += [(f"no-face-{k}", no_face_video(), None) for k in range(1, args.no_face + 1)]
    if not videos:
        raise ConfigError("nothing to send: give video files, --data and --evaluation, or --no-face N")
    return videos


def _scale_crf(text: str) -> tuple[float, int]:
    from deepfake.core.errors import ConfigError

    try:
        scale, crf = text.split(":")
        return float(scale), int(crf)
    except ValueError:
        raise ConfigError(f"--reencode {text!r} must be SCALE:CRF, e.g. 0.4:45") from None
