"""Train a GAN: `accelerate launch train.py [--config configs/NAME.yaml] [--run-dir DIR] [key.sub=value ...]`.

The command lives in gan/train_command.py (installed as `gan-train`); `python train.py --help` lists
its options.
"""

import sys

from gan.train_command import main

if __name__ == "__main__":
    sys.exit(main())
