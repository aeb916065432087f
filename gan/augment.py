"""DiffAugment (Zhao et al. 2020): the same random, differentiable transforms on every image D sees.

Applied to real and generated images alike (in the D step, the G step and the penalties), so D
never learns the augmentation, and G receives gradients through it. Each transform draws its own
random parameters per image from torch's global RNG, which the checkpoints save and restore.
Registered in AUGMENTATIONS: translation, cutout, color (the paper's policy names). Images are in
[-1, 1]; padded and cut-out pixels are 0, as in the paper's code.
"""

import torch
import torch.nn.functional as F

from gan.registry import AUGMENTATIONS

TRANSLATION_RATIO = 1 / 8  # largest shift, as a fraction of the side (the paper's 0.125)
CUTOUT_RATIO = 1 / 2  # side of the cut-out square, as a fraction of the image side


def _per_image(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """One uniform number in [low, high) per image, shaped to broadcast over (C, H, W)."""
    return torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) * (high - low) + low


@AUGMENTATIONS.register("color")
def color(x: torch.Tensor) -> torch.Tensor:
    """Brightness +-0.5, saturation x[0, 2), contrast x[0.5, 1.5): the paper's three colour transforms."""
    x = x + _per_image(x, -0.5, 0.5)
    x = (x - x.mean(1, keepdim=True)) * _per_image(x, 0.0, 2.0) + x.mean(1, keepdim=True)
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * _per_image(x, 0.5, 1.5) + mean


@AUGMENTATIONS.register("translation")
def translation(x: torch.Tensor) -> torch.Tensor:
    """Shift each image by up to 1/8 of its side in x and y (integer pixels), zero-padded."""
    n, _, h, w = x.shape
    max_dy, max_dx = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1, 1), device=x.device)
    # Gather from a 1-pixel zero border: source rows/columns outside the image read the border.
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


@AUGMENTATIONS.register("cutout")
def cutout(x: torch.Tensor) -> torch.Tensor:
    """Zero one square of half the side per image, centred anywhere (clipped at the border)."""
    n, _, h, w = x.shape
    size_y, size_x = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy = torch.randint(0, h + (1 - size_y % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - size_x % 2), (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - (cy - size_y // 2)
    cols = torch.arange(w, device=x.device).view(1, 1, w) - (cx - size_x // 2)
    inside = (rows >= 0) & (rows < size_y) & (cols >= 0) & (cols < size_x)
    return x * (~inside).unsqueeze(1).to(x.dtype)


class DiffAugment:
    """The transforms of augment.policy, in order; the identity for an empty policy."""

    def __init__(self, policy: list[str]):
        self.policy = list(policy)
        self.transforms = [AUGMENTATIONS.get(name, "augment.policy") for name in self.policy]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            x = transform(x)
        return x.contiguous() if self.transforms else x

    def __repr__(self) -> str:
        return f"DiffAugment({self.policy})"
