"""DiffAugment's cutout: one zeroed square per image."""

import torch

from gan.registry import AUGMENTATIONS

CUTOUT_RATIO = 1 / 2  # side of the cut-out square, as a fraction of the image side


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
