"""GAN losses on D's outputs, registered in LOSSES, and the penalties on D's input gradients.

A loss maps D's outputs (logits for bce, critic values for wgan) to scalars:
`d_loss(real_logits, fake_logits)`, `g_loss(fake_logits)`, and `score(logits)` for the log
(the probability "real" for bce, the raw output otherwise). The penalties configured in
`cfg.loss` travel with the loss as `loss.penalties`; gan/steps.py applies them.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gan.registry import LOSSES


@dataclass(frozen=True)
class Penalties:
    """Weights of the D regularisers (cfg.loss); 0 switches one off."""

    gp_weight: float = 0.0  # lambda of the WGAN-GP penalty, every D step
    r1_weight: float = 0.0  # gamma of R1
    r1_every: int = 1  # lazy R1: every k-th D step, weighted by k

    def r1_due(self, d_steps_done: int) -> bool:
        """Lazy R1 (Karras et al. 2020) runs on D steps 0, k, 2k, ...: a function of the data position."""
        return self.r1_weight > 0 and d_steps_done % self.r1_every == 0


class GanLoss:
    def __init__(self, penalties: Penalties = Penalties()):
        self.penalties = penalties

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.mean()


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


@LOSSES.register("hinge")
class HingeLoss(GanLoss):
    """Hinge loss (Lim & Ye 2017; SNGAN, BigGAN). D: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]. G: -E[D(G(z))]."""

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()


@LOSSES.register("lsgan")
class LeastSquaresLoss(GanLoss):
    """LSGAN (Mao et al. 2017) with targets a=0 (fake), b=c=1 (real).

    D: 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2]. G: 1/2 E[(D(G(z)) - 1)^2].
    """

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * (real_logits - 1).square().mean() + 0.5 * fake_logits.square().mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * (fake_logits - 1).square().mean()


@LOSSES.register("wgan")
class WassersteinLoss(GanLoss):
    """The WGAN critic loss (Arjovsky et al. 2017): D: E[D(G(z))] - E[D(x)]. G: -E[D(G(z))].

    The critic must be kept Lipschitz: with loss.gp_weight (WGAN-GP, Gulrajani et al. 2017),
    or spectral norm; config validation refuses it unconstrained.
    """

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return fake_logits.mean() - real_logits.mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()


# --------------------------------------------------------------------------- penalties


def interpolate(real_img: torch.Tensor, gen_img: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's x_hat = eps * x + (1 - eps) * G(z), one eps ~ U[0, 1] per image."""
    eps = torch.rand(len(real_img), *([1] * (real_img.ndim - 1)), device=real_img.device)
    return torch.lerp(gen_img, real_img, eps)


def gradient_penalty(grads: torch.Tensor) -> torch.Tensor:
    """E[(||grad||_2 - 1)^2], each image's gradient flattened (Gulrajani et al. 2017, eq. 3)."""
    norms = torch.linalg.vector_norm(grads.float().flatten(1), dim=1)
    return (norms - 1).square().mean()


def r1_penalty(grads: torch.Tensor) -> torch.Tensor:
    """E[||grad||_2^2] over real images (Mescheder et al. 2018); the caller weights it by gamma / 2."""
    return grads.float().flatten(1).square().sum(1).mean()


def build_loss(cfg):
    penalties = Penalties(cfg.loss.gp_weight, cfg.loss.r1_weight, cfg.loss.r1_every)
    return LOSSES.get(cfg.loss.name, "loss.name")(penalties)
