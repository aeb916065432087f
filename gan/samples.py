"""Noise, images from G, and PNGs: the training grids, gan.generate and the evaluator share them."""

from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid

from gan.data import to_uint8
from gan.errors import GanError
from gan.files import write_atomic

SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes an unsigned 64-bit seed (negatives alias large ones)


def check_seed(seed: int, name: str = "--seed") -> None:
    if not 0 <= seed < SEED_LIMIT:
        raise GanError(f"{name} must be in [0, 2**64) (torch.Generator's seed range), got {seed}")


def sample_latents(num: int, z_dim: int, seed: int, num_classes: int = 0, classes: str | int = "random",
                   class_counts: list[int] | None = None):
    """(z, c) from a private generator seeded with seed, so they never depend on the training RNG.

    z is drawn first, so it is the same whatever the classes. classes: "random" (drawn after z, by
    class_counts, the training images per class, where given, else uniformly), "cycle" (0, 1, ...,
    num_classes-1, 0, ...: a grid shows every class), or one class index for all. An unconditional G
    (num_classes 0) gets class 0 throughout.
    """
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(num, z_dim, generator=gen)
    if classes == "random" and class_counts:
        c = torch.multinomial(torch.tensor(class_counts, dtype=torch.float64), num, replacement=True, generator=gen)
    elif classes == "random":
        c = torch.randint(max(num_classes, 1), (num,), generator=gen)
    elif classes == "cycle":
        c = torch.arange(num) % max(num_classes, 1)
    else:
        c = torch.full((num,), int(classes), dtype=torch.long)
    return z, c


def fixed_noise(num: int, z_dim: int, seed: int, num_classes: int = 0):
    """The training grids' (z, c): the same for the whole run, across resumes and ranks."""
    return sample_latents(num, z_dim, seed, num_classes, classes="cycle")


@torch.no_grad()
def generate_images(G: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor, batch_size: int = 256):
    """uint8 (N, C, H, W) images from G in eval mode; its train/eval mode is restored."""
    was_training = G.training
    G.eval()
    device = next(G.parameters()).device
    out = [to_uint8(G(z[i : i + batch_size].to(device), labels[i : i + batch_size].to(device))).cpu()
           for i in range(0, len(z), batch_size)]  # fmt: skip
    G.train(was_training)
    return torch.cat(out)


def to_pil(image: torch.Tensor) -> Image.Image:
    """uint8 (C, H, W) -> a PIL image: mode L for one channel, RGB for three."""
    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if image.shape[0] == 1 else array)


def grid_image(images: torch.Tensor) -> Image.Image:
    """uint8 (N, C, H, W) -> one PIL image, sqrt(N) columns, 2 px padding."""
    nrow = max(1, int(len(images) ** 0.5))
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=0)  # 3 channels for 1-channel input
    return to_pil(grid[:1] if images.shape[1] == 1 else grid)


def grid_pixels(num: int, height: int, width: int) -> int:
    """Pixels of grid_image's output for num images of height x width."""
    cols = min(num, max(1, int(num**0.5)))
    rows = -(-num // cols)
    return (rows * (height + 2) + 2) * (cols * (width + 2) + 2)


def save_grid(images: torch.Tensor, path: Path) -> None:
    """One PNG, written atomically: a failure leaves the old file (or none) and no temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = grid_image(images)
    write_atomic(path, lambda tmp: image.save(tmp, format="PNG"))
