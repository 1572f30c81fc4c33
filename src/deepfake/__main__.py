"""``python -m deepfake``: the ``deepfake`` command."""

import sys

from deepfake.orchestration.cli import main

sys.exit(main())
