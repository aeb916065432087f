"""Generate images from a trained run's generator (G_ema where it has one).

python -m gan.generate RUN_DIR_OR_CHECKPOINT --num N --out PATH [--seed S] [--class K] [--device D]

PATH ending in .png gets one grid; any other PATH is a folder of N PNGs. The generator's
EMA copy is used where the run has one. Weights load from safetensors: no pickle runs.
"""

import sys
from pathlib import Path

import torch
from PIL import Image

from gan import checkpoint as ckpt
from gan.cli import ArgumentParser
from gan.errors import GanError, exit_on_user_error
from gan.samples import check_seed, generate_images, grid_pixels, sample_latents, save_grid, to_pil

# All N images, their z (float32) and labels (int64) are held in memory at once: z is drawn in one
# call, so that image i is the same whatever N and --batch-size are.
MEMORY_LIMIT = 2 * 2**30  # bytes


def check_num(num: int, out: Path, shape: tuple[int, int, int], z_dim: int) -> None:
    """--num within what fits in memory and, for a .png grid, within what Pillow will open again."""
    channels, height, width = shape
    per_image = channels * height * width + 4 * z_dim + 8
    most = MEMORY_LIMIT // per_image
    if num > most:
        raise GanError(f"--num {num} is too many: the {channels}x{height}x{width} images and their noise "
                       f"are held in memory, at most 2 GiB; give --num <= {most} (calls with other --seed "
                       "values give more)")  # fmt: skip
    pixels, pixel_limit = grid_pixels(num, height, width), Image.MAX_IMAGE_PIXELS
    if out.suffix.lower() == ".png" and pixel_limit and pixels > pixel_limit:
        about = pixel_limit // ((height + 2) * (width + 2))
        raise GanError(f"--num {num} is too many for one .png grid: {pixels} pixels, over Pillow's limit "
                       f"for opening it (PIL.Image.MAX_IMAGE_PIXELS = {pixel_limit}); give --num <= about "
                       f"{about}, or a folder as --out")  # fmt: skip


def write_images(images: torch.Tensor, out: Path) -> None:
    if out.suffix.lower() == ".png":
        save_grid(images, out)
        return
    if out.exists() and not out.is_dir():
        raise GanError(f"--out {str(out)!r} is a file; give a folder, or a path ending in .png for one grid")
    out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        to_pil(image).save(out / f"{i:06d}.png")


def pick_device(name: str | None) -> torch.device:
    """--device, checked; None: the GPU when there is one, else the CPU (z is always drawn on the CPU,
    so the images do not depend on the device beyond its arithmetic)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GanError(f"--device {name!r} is not a device; give cpu, cuda, cuda:N or mps") from None
    usable = {"cpu": lambda: True, "cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if not usable.get(device.type, lambda: False)():
        raise GanError(f"--device {name}: this machine has no such device; give cpu" +
                       (", or cuda" if torch.cuda.is_available() else ""))  # fmt: skip
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise GanError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


@exit_on_user_error
def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m gan.generate", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a run folder (newest checkpoint) or a checkpoint folder")
    parser.add_argument("--num", type=int, default=64, help="number of images")
    parser.add_argument("--out", type=Path, required=True, help="a .png grid, or a folder of PNGs")
    parser.add_argument("--seed", type=int, default=0, help="noise seed, in [0, 2**64)")
    parser.add_argument("--class", dest="label", type=int, default=None, help="class to generate (conditional runs; a cluster with data.pseudo_labels)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps; default: the GPU when there is one")
    args = parser.parse_args(argv)
    if args.num <= 0:
        raise GanError(f"--num must be > 0, got {args.num}")
    if args.batch_size <= 0:
        raise GanError(f"--batch-size must be > 0, got {args.batch_size}")
    check_seed(args.seed)
    device = pick_device(args.device)
    G, cfg, found = ckpt.load_generator(args.source, device)
    num_classes = int(getattr(G, "num_classes", 0))
    if args.label is not None and not 0 <= args.label < max(num_classes, 1):
        raise GanError(f"--class {args.label} is out of range: this run has {num_classes} classes")
    check_num(args.num, args.out, (cfg.data.channels, cfg.data.resolution, cfg.data.resolution), G.z_dim)
    classes = "random" if args.label is None else args.label
    z, c = sample_latents(args.num, G.z_dim, args.seed, num_classes, classes, G.class_counts)
    images = generate_images(G, z, c, args.batch_size)
    try:
        write_images(images, args.out)
    except OSError as err:  # a parent that is a file, a target that is a folder, a read-only or full disk
        raise GanError(f"--out {str(args.out)!r} cannot be written ({err.strerror or err})") from None
    print(f"wrote {args.num} images from {found.path} (step {found.step}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
