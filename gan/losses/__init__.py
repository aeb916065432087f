"""GAN losses on D's outputs and the penalties on D's input gradients.

Each module here (bce.py, hinge.py, lsgan.py, wgan.py) is one loss: a GanLoss subclass registered in
LOSSES under its module's name. A loss maps D's outputs (logits for bce, critic values for wgan) to
scalars: `d_loss(real_logits, fake_logits)`, `g_loss(fake_logits)`, and `score(logits)` for the log
(the probability "real" for bce, the raw output otherwise). A relativistic loss (rpgan) compares
with D's outputs on a real batch in G's step too: it sets `g_needs_real`, and its
`g_loss(fake_logits, real_logits)` gets them. A non-relativistic G step may keep only the generated
images D scores highest (`g_top_k`, loss.top_k). The penalties configured in `cfg.loss`
travel with the loss as `loss.penalties`; gan/steps.py applies them (LeCam's moving anchors are
training state, in Nets.lecam).

Nothing here imports the losses: LOSSES lists them from this folder and imports the one asked for.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gan.registry import LOSSES


@dataclass(frozen=True)
class Penalties:
    """Weights of the D regularisers (cfg.loss); 0 switches one off."""

    gp_weight: float = 0.0  # lambda of the WGAN-GP penalty, every D step
    r1_weight: float = 0.0  # gamma of R1, on real images
    r1_every: int = 1  # lazy R1 and R2: every k-th D step, weighted by k
    r2_weight: float = 0.0  # gamma of R2, on generated images
    lecam_weight: float = 0.0  # lambda of LeCam, every D step (its anchors: Nets.lecam)

    def r1_due(self, d_steps_done: int) -> bool:
        """Lazy R1 (Karras et al. 2020) runs on D steps 0, k, 2k, ...: a function of the data position."""
        return self.r1_weight > 0 and d_steps_done % self.r1_every == 0

    def r2_due(self, d_steps_done: int) -> bool:
        """R2 keeps R1's cadence."""
        return self.r2_weight > 0 and d_steps_done % self.r1_every == 0


class GanLoss:
    g_needs_real = False  # True: g_loss(fake_logits, real_logits) needs D's outputs on a real batch

    def __init__(self, penalties: Penalties = Penalties(), top_k: float = 1.0):
        self.penalties = penalties
        self.top_k = top_k  # the fraction of G's batch its loss takes (cfg.loss.top_k, scheduled)

    def g_top_k(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """Top-k G updates (Sinha et al. 2020): D's outputs on the generated images it scores as most
        real (every loss here scores real higher), ceil(top_k x batch) of them; all when top_k is 1."""
        if self.top_k >= 1:
            return fake_logits
        return fake_logits.flatten().topk(math.ceil(self.top_k * fake_logits.numel())).values

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.mean()


def build_loss(cfg) -> GanLoss:
    loss = cfg.loss
    penalties = Penalties(loss.gp_weight, loss.r1_weight, loss.r1_every, loss.r2_weight, loss.lecam_weight)
    return LOSSES.get(cfg.loss.name, "loss.name")(penalties, cfg.loss.top_k)


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
    """E[||grad||_2^2] over a batch: R1 on real images (Mescheder et al. 2018), R2 on generated ones
    (R3GAN); the caller weights it by gamma / 2."""
    return grads.float().flatten(1).square().sum(1).mean()


class LeCamAnchors:
    """LeCam's anchors (Tseng et al. 2021): moving averages of D's mean output on the real and on the
    generated batches, updated every D step with `decay` and zero-debiased as the authors' code does
    (the average of t updates divided by 1 - decay**t), so the first steps need no warm-up. `state`
    holds (real, fake, t); the checkpoint keeps it. Under DDP the batch means are averaged over the
    processes first, so every process holds the same anchors. A step with non-finite outputs (which
    the loop stops at or skips) leaves them as they were."""

    def __init__(self, decay: float, device=None):
        self.decay = decay
        self.state = torch.zeros(3, device=device)

    def update(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, accelerator=None) -> torch.Tensor:
        """Take this step's means in; returns the anchors (real, fake) to regularise this step with."""
        means = torch.stack([real_logits.detach().float().mean(), fake_logits.detach().float().mean()])
        if accelerator is not None and accelerator.num_processes > 1:
            means = accelerator.reduce(means, reduction="mean")
        updated = torch.cat([self.state[:2].lerp(means, 1 - self.decay), self.state[2:] + 1])
        self.state = torch.where(torch.isfinite(means).all(), updated, self.state)
        return self.state[:2] / (1 - self.decay ** self.state[2])


def lecam_penalty(real_logits: torch.Tensor, fake_logits: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2], LeCam as the authors' code computes it
    (the paper writes the squares without the relu): D's outputs on real images are kept from rising
    far above the generated images' average, and those on generated images from falling far below
    the real ones' average."""
    return F.relu(real_logits - anchors[1]).square().mean() + F.relu(anchors[0] - fake_logits).square().mean()
