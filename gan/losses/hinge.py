"""The hinge loss of SNGAN and BigGAN."""

import torch
import torch.nn.functional as F

from gan.losses import GanLoss
from gan.registry import LOSSES


@LOSSES.register("hinge")
class HingeLoss(GanLoss):
    """Hinge loss (Lim & Ye 2017; SNGAN, BigGAN). D: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]. G: -E[D(G(z))]."""

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()
