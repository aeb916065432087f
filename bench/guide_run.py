"""The guide's own training loop, saved as a run folder that `evaluate.py` scores like any other run.

python bench/guide_run.py --run-dir runs/quality/guide [--steps N]

Trains `bench.reference_loops.GuideGAN` (the guide's code as written) on the embedded 5,000 digits
until --steps or SIGTERM, then writes RUN_DIR/config.yaml (the `vanilla_mnist` preset, whose
networks are the guide's) and one checkpoint whose G and D hold the guide's weights. D's final
Sigmoid has no weights, so the same tensors load into our `mlp` networks. On SIGTERM it exits 75,
as train.py does, so `bench/quality.py` gives both loops the same wall-clock budget.
"""

import argparse
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.reference_loops import GuideGAN  # noqa: E402
from gan import checkpoint as ckpt  # noqa: E402
from gan.config import load_config, to_dict  # noqa: E402
from gan.data import mnist5k  # noqa: E402
from gan.networks import build_networks  # noqa: E402
from gan.run_folder import open_run_dir  # noqa: E402
from gan.train_loop import EXIT_PREEMPTED  # noqa: E402

PRESET = ROOT / "configs" / "vanilla_mnist.yaml"


def train(gan: GuideGAN, steps: int | None) -> tuple[int, bool]:
    """(steps done, whether SIGTERM ended it)."""
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    dataloader = gan.dataloader(mnist5k(None))
    done = 0
    while True:
        for real_images, _ in dataloader:
            gan.step(real_images)
            done += 1
            if stopped or done == steps:
                return done, bool(stopped)


def ours(module: torch.nn.Module, network: torch.nn.Module) -> torch.nn.Module:
    """Our network loaded with the guide's weights (the same layers, under `main.`)."""
    network.load_state_dict({f"main.{k}": v for k, v in module.state_dict().items()}, strict=True)
    return network


def save(run_dir: Path, gan: GuideGAN, step: int) -> Path:
    cfg = load_config(str(PRESET), ["wandb.mode=disabled"])
    lock = open_run_dir(run_dir, cfg)
    try:
        G, D = build_networks(cfg, num_classes=0)
        tmp = ckpt.begin_save(run_dir, step)
        networks = {"G": ours(gan.generator, G), "D": ours(gan.discriminator, D)}
        state = {"step": step, "config": to_dict(cfg), "num_classes": 0}
        meta = {"step": step, "kimg": step * gan.batch_size / 1000, "network": "guide", "has_ema": False}
        return ckpt.finish_save(run_dir, tmp, step, networks, state, meta)
    finally:
        lock.release()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="a new folder for the run")
    parser.add_argument("--steps", type=int, help="stop after this many steps (default: at SIGTERM)")
    args = parser.parse_args()
    if args.run_dir.exists() and any(args.run_dir.iterdir()):
        raise SystemExit(f"error: --run-dir {args.run_dir} exists and is not empty")
    torch.manual_seed(0)
    gan = GuideGAN()
    step, stopped = train(gan, args.steps)
    path = save(args.run_dir, gan, step)
    print(f"guide's loop: {step} steps; checkpoint {path}", flush=True)
    return EXIT_PREEMPTED if stopped else 0


if __name__ == "__main__":
    sys.exit(main())
