"""Fixed-noise sample grids: the same z for the whole run, across resumes and ranks."""

from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid

from gan.data import to_uint8


def fixed_noise(num: int, z_dim: int, seed: int, num_classes: int = 0):
    """(z, labels) from a private generator, so they never depend on the training RNG."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(num, z_dim, generator=gen)
    labels = torch.arange(num) % max(num_classes, 1)
    return z, labels


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


def grid_image(images: torch.Tensor) -> Image.Image:
    """uint8 (N, C, H, W) -> one PIL image, sqrt(N) columns, 2 px padding."""
    nrow = max(1, int(len(images) ** 0.5))
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=0)
    array = grid.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if images.shape[1] == 1 else array)


def save_grid(images: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    grid_image(images).save(tmp)
    tmp.replace(path)
