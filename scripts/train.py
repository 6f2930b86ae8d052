"""Train a rave_ddsp model (see ``--help`` and README.md).

    python scripts/train.py --config configs/v2.yaml --data.path DB_OR_AUDIO_DIR --name RUN
"""
import sys

from rave_ddsp.train.cli import TrainingCLI
from rave_ddsp.errors import script_main


@script_main
def main() -> int:
    TrainingCLI().fit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
