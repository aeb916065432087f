"""The least-squares GAN loss."""

import torch

from gan.losses import GanLoss
from gan.registry import LOSSES


@LOSSES.register("lsgan")
class LeastSquaresLoss(GanLoss):
    """LSGAN (Mao et al. 2017) with targets a=0 (fake), b=c=1 (real).

    D: 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2]. G: 1/2 E[(D(G(z)) - 1)^2].
    """

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * (real_logits - 1).square().mean() + 0.5 * fake_logits.square().mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * (fake_logits - 1).square().mean()
