"""Evaluate a run's checkpoints: `python evaluate.py RUN_DIR [--metrics fid,kid,is] [--num-samples N] [--watch]`.

FID, KID and IS with torch-fidelity's `inception-v3-compat` against the run's training data, for
every checkpoint not yet evaluated with the same settings. One line per checkpoint is appended to
RUN_DIR/metrics.jsonl, the best by FID goes to RUN_DIR/best.json, the numbers to the run's W&B run.
`accelerate launch evaluate.py ...` splits generation and feature extraction across processes; the
installed `gan-evaluate ...` runs the same as one process.
"""

from pathlib import Path

from gan.cli import ArgumentParser
from gan.errors import GanError, exit_on_user_error
from gan.registry import METRICS  # lists the metric modules' names without importing them


def positive(name: str, value) -> None:
    if value is not None and value <= 0:
        raise GanError(f"{name} must be > 0, got {value}")


@exit_on_user_error
def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the run folder (the --run-dir of train.py)")
    parser.add_argument("--metrics", default="fid,kid,is",
                        help=f"comma-separated, any of: {', '.join(METRICS.names())} (default: %(default)s)")
    parser.add_argument("--num-samples", type=int, default=10000, help="generated images per checkpoint")
    parser.add_argument("--num-real", type=int, default=None,
                        help="real images for the statistics (a fixed random subset); default: all of them")
    parser.add_argument("--checkpoints", default="all", help="all, latest, or comma-separated steps (500,1000)")
    parser.add_argument("--watch", action="store_true", help="keep evaluating new checkpoints until training ends")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch and process")
    parser.add_argument("--seed", type=int, default=0, help="noise seed of the generated images, in [0, 2**64)")
    parser.add_argument("--kid-subset-size", type=int, default=1000, help="images per KID subset")
    parser.add_argument("--poll-seconds", type=float, default=30.0, help="--watch: seconds between looks")
    parser.add_argument("--reference", default="train",
                        help="what FID/KID compare with: train (the run's data), a folder of images, a prepared set, "
                             "an .npz with mu and sigma, or a torch-fidelity input such as cifar10-train")  # fmt: skip
    args = parser.parse_args(argv)
    for name in ("num_samples", "num_real", "batch_size", "kid_subset_size", "poll_seconds"):
        positive(f"--{name.replace('_', '-')}", getattr(args, name))

    from gan.evaluation.metrics import parse_metrics  # heavy imports only past argument errors
    from gan.evaluation.reference import parse_reference
    from gan.evaluation.runner import EvalOptions, parse_checkpoints, run
    from gan.samples import check_seed

    parse_checkpoints(args.checkpoints)
    check_seed(args.seed)
    options = EvalOptions(
        run_dir=args.run_dir, metrics=parse_metrics(args.metrics), num_samples=args.num_samples,
        num_real=args.num_real, checkpoints=args.checkpoints, watch=args.watch, batch_size=args.batch_size,
        seed=args.seed, kid_subset_size=args.kid_subset_size, poll_seconds=args.poll_seconds,
        reference=parse_reference(args.reference),
    )  # fmt: skip
    return run(options)
