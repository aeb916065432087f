"""The README's picture: 64 samples of each run given, next to 64 real images of the first run's data.

python -m bench.picture RUN [RUN ...] --out docs/samples.png [--titles "a,b"] [--seed 0]

Each run's newest checkpoint (G_ema where it keeps one) draws 64 images as `gan.generate RUN --num
64 --seed S` does (a conditional G's classes by the training data's frequencies, so a self-conditioned
run shows its clusters as often as the data holds them); the real images are 64 drawn at random,
with the same seed, from the data set the first run trained on.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from gan.checkpoint import load_generator  # noqa: E402
from gan.data import as_tensor, build_data  # noqa: E402
from gan.samples import generate_images, grid_image, sample_latents  # noqa: E402

NUM = 64


def samples(run: Path, seed: int) -> tuple[np.ndarray, str]:
    G, cfg, found = load_generator(run)
    z, c = sample_latents(NUM, G.z_dim, seed, G.num_classes, "random", G.class_counts)
    return np.asarray(grid_image(generate_images(G, z, c))), f"{cfg.preset}, step {found.step:,}"


def real(run: Path, seed: int) -> np.ndarray:
    data = build_data(load_generator(run)[1])
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:NUM]
    return np.asarray(grid_image(as_tensor(data.images[pick.numpy()])))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.picture", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders")
    parser.add_argument("--out", type=Path, required=True, help="the picture, .png")
    parser.add_argument("--titles", help="comma-separated titles, one per run (default: preset and step)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    panels = [samples(run, args.seed) for run in args.runs]
    if args.titles:
        titles = args.titles.split(",")
        if len(titles) != len(args.runs):
            raise SystemExit(f"error: --titles has {len(titles)} titles for {len(args.runs)} runs")
        panels = [(grid, title) for (grid, _), title in zip(panels, titles, strict=True)]
    panels.append((real(args.runs[0], args.seed), "real digits"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.5))
    for ax, (grid, title) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
