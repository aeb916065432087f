"""Evaluate a run's checkpoints: `python evaluate.py RUN_DIR [--metrics fid,kid,is] [--num-samples N] [--watch]`.

The command lives in gan/evaluate_command.py (installed as `gan-evaluate`); `python evaluate.py --help`
lists its options.
"""

import sys

from gan.evaluate_command import main

if __name__ == "__main__":
    sys.exit(main())
