"""The named parts of one training step: d_step, g_step, update_ema.

Each returns detached tensors for the logger; nothing here calls `.item()`, so the step
never waits on the device except for the one finiteness check per optimizer step.
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Nets:
    """The prepared (possibly DDP-wrapped) networks and optimizers of a run."""

    G: nn.Module
    D: nn.Module
    G_ema: nn.Module | None
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    z_dim: int
    num_classes: int = 0  # > 0 for class-conditional networks


class NonFiniteLoss(Exception):
    """Raised by a step whose loss is not finite on some process, before any weight changes."""

    def __init__(self, which: str):
        super().__init__(which)
        self.which = which


def all_finite(loss: torch.Tensor, accelerator) -> bool:
    """True when the loss is finite on every process (one host sync; a reduce under DDP)."""
    bad = (~torch.isfinite(loss.detach())).float()
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    return not bool(bad)


def sample_z(n: int, z_dim: int, device) -> torch.Tensor:
    return torch.randn(n, z_dim, device=device)


def d_step(nets: Nets, loss_fn, real_img, labels, accelerator) -> dict:
    """One D update on a real batch and a batch from the current G."""
    with torch.no_grad():  # no graph through G, and no DDP reducer armed for it
        gen_img = nets.G(sample_z(len(real_img), nets.z_dim, real_img.device), labels)
    real_logits = nets.D(real_img, labels)
    fake_logits = nets.D(gen_img, labels)
    with accelerator.autocast():
        d_loss = loss_fn.d_loss(real_logits.float(), fake_logits.float())
    nets.opt_D.zero_grad(set_to_none=True)
    accelerator.backward(d_loss)
    if not all_finite(d_loss, accelerator):
        nets.opt_D.zero_grad(set_to_none=True)
        raise NonFiniteLoss("d_loss")
    nets.opt_D.step()
    return {
        "loss/D": d_loss.detach(),
        "D/real_score": torch.sigmoid(real_logits.detach().float()).mean(),
        "D/fake_score": torch.sigmoid(fake_logits.detach().float()).mean(),
    }


def g_step(nets: Nets, loss_fn, batch_size: int, labels, accelerator) -> dict:
    """One G update through a frozen D.

    D's weights need no gradient here, and under DDP its forward runs in `no_sync`
    so D does not all-reduce gradients it will never use.
    """
    nets.D.requires_grad_(False)
    try:
        gen_img = nets.G(sample_z(batch_size, nets.z_dim, labels.device), labels)
        with accelerator.no_sync(nets.D):
            fake_logits = nets.D(gen_img, labels)
            with accelerator.autocast():
                g_loss = loss_fn.g_loss(fake_logits.float())
            nets.opt_G.zero_grad(set_to_none=True)
            accelerator.backward(g_loss)
    finally:
        nets.D.requires_grad_(True)
    if not all_finite(g_loss, accelerator):
        nets.opt_G.zero_grad(set_to_none=True)
        raise NonFiniteLoss("g_loss")
    nets.opt_G.step()
    return {"loss/G": g_loss.detach()}


def update_ema(nets: Nets, accelerator) -> None:
    if nets.G_ema is not None:
        nets.G_ema.update_parameters(accelerator.unwrap_model(nets.G))


def grad_norm(module: nn.Module) -> torch.Tensor:
    """L2 norm of a module's current gradients (0 when it has none)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
