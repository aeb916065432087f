"""The Wasserstein critic loss."""

import torch

from gan.losses import GanLoss
from gan.registry import LOSSES


@LOSSES.register("wgan")
class WassersteinLoss(GanLoss):
    """The WGAN critic loss (Arjovsky et al. 2017): D: E[D(G(z))] - E[D(x)]. G: -E[D(G(z))].

    The critic must be kept Lipschitz: with loss.gp_weight (WGAN-GP, Gulrajani et al. 2017), loss.r1_weight
    or spectral norm; config validation refuses it unconstrained.
    """

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return fake_logits.mean() - real_logits.mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()
