"""Entry point of the pipeline's first step: list the dataset's S3 prefix and write its identity.

``python3 inventory_step.py --data-url s3://bucket/prefix/ --out-dir DIR`` lists every
object under the prefix (nothing is downloaded) and writes ``DIR/listing.json``:
the prefix, the digest of the listing (each object's key, size and ETag), and the
object, video and byte counts (:meth:`deepfake.data.listing.Listing.record`). The
step is never cached: it runs as every execution starts, and the digest reaches
the exploration's arguments, so SageMaker's step cache (which keys on arguments,
not on what a prefix holds) reruns exploration and extraction when the data
changed, and reuses them when it did not. The registered model records it too.

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

log = logging.getLogger("inventory_step")

LISTING = "listing.json"                             # the step's output, read as a PropertyFile


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="inventory_step.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-url", required=True, help="the dataset's S3 prefix (InputDataUrl)")
    parser.add_argument("--out-dir", required=True, type=Path, help=f"where {LISTING} goes")
    parser.add_argument("--no-install", dest="install", action="store_false",
                        help="use the kit already installed (local runs and tests)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    failed = run_step.start("inventory", args.install)
    if failed:
        return failed
    from botocore.exceptions import BotoCoreError, ClientError

    from deepfake.core.errors import DeepfakeError
    from deepfake.core.files import write_json
    from deepfake.data.listing import list_data

    try:
        listing = list_data(args.data_url)
    except DeepfakeError as exc:
        return run_step.fail(f"inventory: {exc}", run_step.EXIT_CONFIG)
    except (BotoCoreError, ClientError) as exc:
        return run_step.fail(f"inventory: cannot list {args.data_url}: {exc}", run_step.EXIT_CONFIG)
    if not listing.objects:
        return run_step.fail(f"inventory: no object under {args.data_url}; upload the dataset there or set "
                             "InputDataUrl to where it is", run_step.EXIT_CONFIG)
    record = listing.record()
    write_json(args.out_dir / LISTING, record)
    log.info("%s: %d objects (%d videos), %d bytes, digest %s", args.data_url, record["objects"], record["videos"],
             record["bytes"], record["digest"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
