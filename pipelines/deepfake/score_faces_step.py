"""Entry point of the pipeline's sharded evaluation scoring: the face logits of one instance's crops.

``python3 score_faces_step.py --faces-dir F --crops-dir C --model-dir M --out-dir O`` runs on
every instance of the ``score`` step, between training and evaluation: ``C`` holds this
instance's share of the evaluation's tar shards (``ShardedByS3Key`` over the
extraction's ``eval`` group), and every face whose crop is there gets its logit from
the trained model (:func:`deepfake.stages.evaluate.score_shard`), written to
``O/face_logits-<host>.csv``. The evaluation step then reads every instance's
logits instead of scoring the crops itself, and computes the metrics and the report
with the same code as a single-instance evaluation (which a test holds it to).

Like ``run_step.py`` (whose install and exit-message helpers it uses) it imports
only the standard library before the install.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__:
    from . import run_step
else:                                                # run as a script from the code input
    import run_step

log = logging.getLogger("score_faces_step")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="score_faces_step.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces-dir", required=True, type=Path, help="the extraction's faces tables")
    parser.add_argument("--crops-dir", required=True, type=Path, help="this instance's share of the tar shards")
    parser.add_argument("--model-dir", required=True, type=Path, help="the training's output (holds model/)")
    parser.add_argument("--out-dir", required=True, type=Path, help="where face_logits-<host>.csv goes")
    parser.add_argument("--batch-size", type=int, default=64, help="face crops per model call")
    parser.add_argument("--no-install", dest="install", action="store_false",
                        help="use the kit already installed (local runs and tests)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    failed = run_step.start("score faces", args.install)
    if failed:
        return failed
    from deepfake.core.errors import DeepfakeError
    from deepfake.data.faces_table import read_faces
    from deepfake.modeling.artifact import load_artifact
    from deepfake.stages.evaluate import score_shard

    try:
        host = run_step.current_host()
        loaded = load_artifact(args.model_dir)
        faces = read_faces(args.faces_dir, crops_dir=args.crops_dir)
        here = int((faces["abs_path"] != "").sum())
        log.info("%s: %d of the %d face crops are in this instance's tar shards", host, here,
                 int((faces["status"] == "ok").sum()))
        out = score_shard(loaded, faces, args.out_dir, name=host, batch_size=args.batch_size)
    except DeepfakeError as exc:
        return run_step.fail(f"score faces: {exc}", run_step.EXIT_CONFIG)
    log.info("%s: logits of %d faces in %s", host, here, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
