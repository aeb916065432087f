"""Training throughput of our pipeline against reference loops, measured side by side in one run.

python bench/bench_loop.py [--steps-vanilla N] [--steps-dcgan N] [--repeats R]

- vanilla_mnist (our loop: Accelerate, in-memory data, logging, samples, checkpoints at the
  preset's cadence) against the guide's original loop (per-sample PIL ToTensor/Normalize).
  Target: >= 1.3x.
- dcgan_mnist (our loop, with G_ema) against a minimal hand-written loop over the same networks
  and batch. Target: >= 0.95x, i.e. pipeline overhead under 5%.

Each figure is img/s over the whole run, set-up included; runs alternate (ours, reference, ours,
...) and the best of `repeats` is kept for each, so drift on a busy machine hits both alike.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.reference_loops import guide_loop, minimal_loop  # noqa: E402
from gan.config import load_config  # noqa: E402
from gan.networks import build_networks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def ours(preset: str, steps: int) -> float:
    from gan.train_loop import train

    cfg = load_config(ROOT / "configs" / f"{preset}.yaml", [f"train.steps={steps}", "wandb.mode=disabled"])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(cfg, Path(tmp) / "run")
        return steps * cfg.train.batch_size / (time.perf_counter() - start)


def minimal(preset: str, steps: int) -> float:
    cfg = load_config(ROOT / "configs" / f"{preset}.yaml", [])
    torch.manual_seed(0)
    G, D = build_networks(cfg)
    return minimal_loop(G, D, steps, cfg.train.batch_size, cfg.optim.lr_g, tuple(cfg.optim.betas)).img_per_s


def side_by_side(name, ours_fn, ref_fn, repeats: int) -> tuple[float, float]:
    a, b = [], []
    for _ in range(repeats):
        a.append(ours_fn())
        b.append(ref_fn())
    print(f"  {name}: ours {[round(x) for x in a]} img/s, reference {[round(x) for x in b]} img/s", file=sys.stderr)
    return max(a), max(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-vanilla", type=int, default=3000)
    parser.add_argument("--steps-dcgan", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", file=sys.stderr)
    rows = []
    v_ours, v_ref = side_by_side("vanilla_mnist", lambda: ours("vanilla_mnist", args.steps_vanilla),
                                 lambda: guide_loop(args.steps_vanilla).img_per_s, args.repeats)  # fmt: skip
    rows.append(("vanilla_mnist vs the guide's loop", v_ours, v_ref, 1.3))
    d_ours, d_ref = side_by_side("dcgan_mnist", lambda: ours("dcgan_mnist", args.steps_dcgan),
                                 lambda: minimal("dcgan_mnist", args.steps_dcgan), args.repeats)  # fmt: skip
    rows.append(("dcgan_mnist vs a minimal hand-written loop", d_ours, d_ref, 0.95))
    print()
    print("| comparison | ours img/s | reference img/s | ratio | target |")
    print("|---|---|---|---|---|")
    for name, a, b, target in rows:
        verdict = "met" if a / b >= target else "NOT met"
        print(f"| {name} | {a:.0f} | {b:.0f} | {a / b:.2f}x | >= {target}x ({verdict}) |")


if __name__ == "__main__":
    main()
