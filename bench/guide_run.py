"""The guide's own training loop, saved as a run folder that `evaluate.py` scores like any other run.

python -m bench.guide_run --run-dir runs/quality/guide [--steps N]

Trains `bench.reference_loops.GuideGAN` (the guide's code as written) on the embedded 5,000 digits
until --steps or SIGTERM, then writes RUN_DIR/config.yaml (the `vanilla_mnist` preset, whose
networks and optimizers are the guide's) and one checkpoint in train.py's format whose G, D and
Adam states are the guide's. D's final Sigmoid has no weights, so the same tensors load into our
`mlp` networks. On SIGTERM it exits 75,
as train.py does, so `bench/quality.py` gives both loops the same wall-clock budget.
"""

import argparse
import signal
import sys
from pathlib import Path

import torch

from bench.reference_loops import GuideGAN, mnist5k
from gan.checkpoint import resolve_checkpoint, training
from gan.config import load_config
from gan.errors import EXIT_PREEMPTED
from gan.networks import build_networks
from gan.run_folder import open_run_dir
from gan.steps import Nets

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "vanilla_mnist.yaml"


def train(gan: GuideGAN, steps: int | None) -> tuple[int, bool]:
    """(steps done, whether SIGTERM ended it)."""
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    dataloader = gan.dataloader(mnist5k())
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


def adam_holding(optimizer: torch.optim.Adam, module: torch.nn.Module) -> torch.optim.Adam:
    """An Adam over our module's parameters holding `optimizer`'s state (the same parameters, in order)."""
    adam = torch.optim.Adam(module.parameters())
    adam.load_state_dict(optimizer.state_dict())
    return adam


def save(run_dir: Path, gan: GuideGAN, step: int) -> Path:
    """A checkpoint as train.py writes one (gan.checkpoint.training.save), of our networks and Adam
    optimizers holding the guide's weights and Adam state after `step` steps of one batch each."""
    from accelerate import Accelerator

    cfg = load_config(str(PRESET), ["wandb.mode=disabled"])
    lock = open_run_dir(run_dir, cfg)
    try:
        G, D = build_networks(cfg, num_classes=0)
        G, D = ours(gan.generator, G), ours(gan.discriminator, D)
        opt_G, opt_D = adam_holding(gan.optimizer_G, G), adam_holding(gan.optimizer_D, D)
        nets = Nets(G, D, None, opt_G, opt_D, z_dim=G.z_dim)
        training.save(Accelerator(), run_dir, cfg, nets, training.TrainState(step=step, batches_seen=step))
    finally:
        lock.release()
    return resolve_checkpoint(run_dir).path


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.guide_run", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="a new folder for the run")
    parser.add_argument("--steps", type=int, help="stop after this many steps (default: at SIGTERM)")
    parser.add_argument("--seed", type=int, default=0, help="torch's seed (default 0)")
    args = parser.parse_args()
    if args.run_dir.exists() and any(args.run_dir.iterdir()):
        raise SystemExit(f"error: --run-dir {args.run_dir} exists and is not empty")
    torch.manual_seed(args.seed)
    gan = GuideGAN()
    step, stopped = train(gan, args.steps)
    path = save(args.run_dir, gan, step)
    print(f"guide's loop: {step} steps; checkpoint {path}", flush=True)
    return EXIT_PREEMPTED if stopped else 0


if __name__ == "__main__":
    sys.exit(main())
