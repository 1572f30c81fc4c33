"""The model card: what a model is for, what it saw, how it did, where it fails.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def model_card(config: Mapping[str, Any]) -> str:
    """A short Markdown card: what the model is for, what it saw, how it did, where it fails."""
    lines = [
        "# Deepfake face classifier",
        "",
        f"- architecture: {config.get('architecture')} ({_pretrained_text(config)}), one logit: P(fake)",
        f"- input: RGB face crop resized to {config.get('image_size')} px, "
        f"normalised with mean {_fmt(config['normalization']['mean'])} std {_fmt(config['normalization']['std'])}",
        f"- labels: {json.dumps(config.get('label_map'))}; scoring: {_scoring_text(config)}",
        f"- kit version {config.get('kit_version')}, created {config.get('created')}",
        f"- weights sha256 `{config.get('weights_sha256')}`",
        "",
        "## Intended use",
        "",
        "Screening face videos for face swaps and reenactment: it scores the faces the kit's",
        "extraction finds in sampled frames and aggregates them per video. A high score is a",
        "reason for a person to look closer, not proof of manipulation.",
        "",
        "## Data",
        "",
    ]
    lines += _data_lines(config)
    lines += ["", "## Metrics", ""]
    metrics = config.get("metrics") or {}
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    else:
        lines.append("Not evaluated yet: see the evaluation report (`evaluation.json`).")
    lines += [
        "",
        "## Limitations",
        "",
        "- Sees single frames: no temporal cues, no audio.",
        "- Trained on the manipulation methods and compression of its training data; new generators,",
        "  heavy re-compression, small or occluded faces and faces the detector misses lower its accuracy.",
        "- Scores are calibrated (temperature scaling) on the validation split only; on data unlike it",
        "  they may not be: check the threshold on a held-out set from the deployment's own distribution.",
        "- Demographic performance differences were not measured.",
        "",
    ]
    return "\n".join(lines)


def _data_lines(config: Mapping[str, Any]) -> list[str]:
    """What the model saw and how training went: the card's Data section."""
    lines: list[str] = []
    data = config.get("data") or {}
    if data:
        for split, counts in data.items():
            lines.append(f"- {split}: " + ", ".join(f"{k} {v}" for k, v in dict(counts).items()))
    else:
        lines.append("- not recorded")
    train = config.get("train") or {}
    if train:
        lines.append(f"- training: mode {train.get('mode', 'dataset')}, {train.get('epochs')} epochs max, "
                     f"unfreeze_blocks={train.get('unfreeze_blocks')}, balance={train.get('balance')}, "
                     f"seed={train.get('seed')}")
    training = config.get("training") or {}
    if training:
        seen = training.get("manipulations_seen") or []
        lines.append(f"- fakes in training: {', '.join(seen) if seen else 'none from the dataset'}"
                     + (f"; pseudo-fakes: {training['pseudo_fakes']}" if training.get("pseudo_fakes") else ""))
    calibration = config.get("calibration") or {}
    if calibration:
        lines.append(f"- calibration: temperature {_fmt(calibration.get('temperature'))} fitted on "
                     f"{calibration.get('fitted_on')} (log loss {_fmt(calibration.get('nll_before'))} -> "
                     f"{_fmt(calibration.get('nll_after'))})")
    if config.get("best_epoch") is not None:
        lines.append(f"- best epoch {config.get('best_epoch')} (validation loss {_fmt(config.get('best_val_loss'))})")
    return lines


def _pretrained_text(config: Mapping[str, Any]) -> str:
    source = config.get("pretrained") or {}
    if not source:
        return "ImageNet-pretrained"
    return f"ImageNet weights from {source.get('kind')} {source.get('location')}, sha256 `{source.get('sha256')}`"


def _scoring_text(config: Mapping[str, Any]) -> str:
    scoring = config.get("scoring") or {}
    return (f"face logit / temperature {_fmt(scoring.get('temperature', 1.0))}, a frame is its most fake face, "
            f"video = `{scoring.get('aggregation', 'mean')}` of frames, FAKE at p_fake >= "
            f"{_fmt(scoring.get('threshold', 0.5))}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)
