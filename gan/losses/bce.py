"""The original GAN's loss, non-saturating for G."""

import torch
import torch.nn.functional as F

from gan.losses import GanLoss
from gan.registry import LOSSES


@LOSSES.register("bce")
class NonSaturatingLoss(GanLoss):
    """The original GAN's BCE loss, on logits: safe under fp16/bf16, unlike Sigmoid followed by BCELoss.

    D: BCE(D(x), 1) + BCE(D(G(z)), 0). G (non-saturating): BCE(D(G(z)), 1).
    """

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return real + fake

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits).mean()
