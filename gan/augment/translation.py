"""DiffAugment's translation: a random shift per image, zero-padded."""

import torch
import torch.nn.functional as F

from gan.registry import AUGMENTATIONS

TRANSLATION_RATIO = 1 / 8  # largest shift, as a fraction of the side (the paper's 0.125)


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
