"""DiffAugment's colour transforms: brightness, saturation, contrast."""

import torch

from gan.registry import AUGMENTATIONS


def _per_image(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """One uniform number in [low, high) per image, shaped to broadcast over (C, H, W)."""
    return torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype) * (high - low) + low


@AUGMENTATIONS.register("color")
def color(x: torch.Tensor) -> torch.Tensor:
    """Brightness +-0.5, saturation x[0, 2), contrast x[0.5, 1.5): the paper's three colour transforms."""
    x = x + _per_image(x, -0.5, 0.5)
    x = (x - x.mean(1, keepdim=True)) * _per_image(x, 0.0, 2.0) + x.mean(1, keepdim=True)
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * _per_image(x, 0.5, 1.5) + mean
