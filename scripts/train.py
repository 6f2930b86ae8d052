"""Train a rave_ddsp model (see ``--help`` and README.md).

    python scripts/train.py --config configs/v2.yaml --data.path DB_OR_AUDIO_DIR --name RUN
"""
import sys

from rave_ddsp.cli import TrainingCLI
from rave_ddsp.errors import UserError


def main() -> None:
    try:
        TrainingCLI().fit()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
