"""GAN losses on D's logits, registered in LOSSES.

A loss maps logits to scalars: `d_loss(real_logits, fake_logits)` and `g_loss(fake_logits)`.
"""

import torch
import torch.nn.functional as F

from gan.registry import LOSSES


@LOSSES.register("bce")
class NonSaturatingLoss:
    """The guide's BCE loss, on logits: safe under fp16/bf16, unlike Sigmoid followed by BCELoss.

    D: BCE(D(x), 1) + BCE(D(G(z)), 0). G (non-saturating): BCE(D(G(z)), 1).
    """

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return real + fake

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def build_loss(cfg):
    return LOSSES.get(cfg.loss.name, "loss.name")()
