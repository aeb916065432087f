"""The relativistic pairing loss of RpGAN and R3GAN."""

import torch
import torch.nn.functional as F

from gan.losses import GanLoss
from gan.registry import LOSSES


@LOSSES.register("rpgan")
class RelativisticPairingLoss(GanLoss):
    """RpGAN (Jolicoeur-Martineau 2019; R3GAN, Huang et al. 2024), real image i paired with generated image i.

    D: E[softplus(-(D(x_i) - D(G(z_i))))]. G: E[softplus(-(D(G(z_i)) - D(x_i)))], with D(x) on a real
    batch of its own, through the frozen D. R3GAN adds R1 and R2 (loss.r1_weight, loss.r2_weight).
    """

    g_needs_real = True

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.softplus(-(real_logits - fake_logits)).mean()

    def g_loss(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
        return F.softplus(-(fake_logits - real_logits)).mean()
