"""Train a GAN: `accelerate launch train.py --config configs/NAME.yaml --run-dir DIR [key.sub=value ...]`.

`python train.py ...` runs the same as one process. A second launch with the same --run-dir
resumes from its newest complete checkpoint.
"""

import sys
from pathlib import Path

from gan.cli import ArgumentParser
from gan.config import load_config, to_yaml
from gan.errors import exit_on_user_error


@exit_on_user_error
def main(argv=None) -> int:
    parser = ArgumentParser(prog="train.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a preset, e.g. configs/dcgan_mnist.yaml")
    parser.add_argument("--run-dir", help="the run folder: config, checkpoints, samples, logs")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="e.g. train.steps=500")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        print(to_yaml(cfg), end="")
        return 0
    if not args.run_dir:
        parser.error("--run-dir is required unless --dry-run is given")

    from gan.train_loop import train  # heavy imports only when training

    return train(cfg, Path(args.run_dir))


if __name__ == "__main__":
    sys.exit(main())
