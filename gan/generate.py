"""Generate images from a trained run: the guide's last step, "save the model and use it".

python -m gan.generate RUN_DIR_OR_CHECKPOINT --num N --out PATH [--seed S] [--class K]

PATH ending in .png gets one grid; any other PATH is a folder of N PNGs. The generator's
EMA copy is used where the run has one. Weights load from safetensors: no pickle runs.
"""

import sys
from pathlib import Path

import torch
from PIL import Image

from gan import checkpoint as ckpt
from gan.cli import ArgumentParser
from gan.config import from_dict
from gan.errors import GanError, exit_on_user_error
from gan.samples import generate_images, save_grid


def load_generator(path: Path, device="cpu"):
    """(G, config, checkpoint) from a run folder or a checkpoint folder; G_ema where there is one."""
    found = ckpt.resolve_checkpoint(path)
    state = ckpt.load_plain(found.path / "state.pt")
    if not isinstance(state, dict) or "config" not in state:
        raise GanError(f"checkpoint file {str(found.path / 'state.pt')!r} holds no config")
    cfg = from_dict(state["config"])
    from gan.networks import build_networks

    G, _ = build_networks(cfg, num_classes=int(state.get("num_classes", 0)))
    ckpt.load_network(G, ckpt.generator_file(found))
    return G.to(device).eval(), cfg, found


def write_images(images: torch.Tensor, out: Path) -> None:
    if out.suffix.lower() == ".png":
        save_grid(images, out)
        return
    if out.exists() and not out.is_dir():
        raise GanError(f"--out {str(out)!r} is a file; give a folder, or a path ending in .png for one grid")
    out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        array = image.permute(1, 2, 0).numpy()
        Image.fromarray(array[..., 0] if image.shape[0] == 1 else array).save(out / f"{i:06d}.png")


@exit_on_user_error
def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m gan.generate", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a run folder (newest checkpoint) or a checkpoint folder")
    parser.add_argument("--num", type=int, default=64, help="number of images")
    parser.add_argument("--out", type=Path, required=True, help="a .png grid, or a folder of PNGs")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--class", dest="label", type=int, default=None, help="class to generate (conditional runs)")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    if args.num <= 0:
        raise GanError(f"--num must be > 0, got {args.num}")
    if args.batch_size <= 0:
        raise GanError(f"--batch-size must be > 0, got {args.batch_size}")
    G, cfg, found = load_generator(args.source)
    num_classes = int(getattr(G, "num_classes", 0))
    if args.label is not None and not 0 <= args.label < max(num_classes, 1):
        raise GanError(f"--class {args.label} is out of range: this run has {num_classes} classes")
    gen = torch.Generator().manual_seed(args.seed)
    z = torch.randn(args.num, G.z_dim, generator=gen)
    labels = torch.full((args.num,), args.label or 0, dtype=torch.long)
    if args.label is None and num_classes:
        labels = torch.randint(num_classes, (args.num,), generator=gen)
    images = generate_images(G, z, labels, args.batch_size)
    try:
        write_images(images, args.out)
    except OSError as err:  # a parent that is a file, a read-only or full disk
        raise GanError(f"--out {str(args.out)!r} cannot be written ({err.strerror or err})") from None
    print(f"wrote {args.num} images from {found.path} (step {found.step}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
