"""The D and G steps as they were before D saw the real and the generated batch in one call (issue 19):
one call of D per batch, a penalty's gradients each from their own autograd.grad. Kept verbatim as the
reference that tests/test_step_equivalence.py compares the one-call step with; not used by the package.
"""

import torch

from gan.losses import gradient_penalty, interpolate, r1_penalty
from gan.steps import Nets, NonFiniteLoss, all_finite, sample_z


def run_D(nets: Nets, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """D's outputs on augmented images: real, generated and interpolated images all pass the same pipeline."""
    return nets.D(nets.augment(images), labels)


def d_step(nets: Nets, loss_fn, real_img, labels, accelerator, d_steps_done: int = 0) -> dict:
    """One D update on a real batch and a batch from the current G, with the configured penalties.

    d_steps_done counts the D steps before this one (the data position); lazy R1 and R2 run when it
    is a multiple of loss.r1_every.
    """
    penalties = loss_fn.penalties
    r1_due, r2_due = penalties.r1_due(d_steps_done), penalties.r2_due(d_steps_done)
    with torch.no_grad():  # no graph through G, and no DDP reducer armed for it
        gen_img = nets.G(sample_z(len(real_img), nets.z_dim, real_img.device), labels)
    # R1 and R2 differentiate D(x) w.r.t. x, real and generated
    real_img = real_img.detach().requires_grad_(r1_due)
    gen_img = gen_img.detach().requires_grad_(r2_due)
    real_logits = run_D(nets, real_img, labels)
    fake_logits = run_D(nets, gen_img, labels)
    with accelerator.autocast():
        d_loss = loss_fn.d_loss(real_logits.float(), fake_logits.float())
    due = (r1_due, r2_due)
    penalty, stats = regularize(nets, penalties, real_img, real_logits, gen_img, fake_logits, labels, accelerator, due)
    nets.opt_D.zero_grad(set_to_none=True)
    accelerator.backward(d_loss + penalty)
    # Under fp16 an overflow in the scaled input gradients makes the penalty inf: the GradScaler then
    # skips this update and lowers its scale, as for any overflow, so only the loss itself is checked.
    checked = d_loss if accelerator.scaler is not None else d_loss + penalty
    if not all_finite(checked, accelerator):
        nets.opt_D.zero_grad(set_to_none=True)
        raise NonFiniteLoss("d_loss")
    nets.opt_D.step()
    return stats | {
        "loss/D": d_loss.detach(),
        "D/real_score": loss_fn.score(real_logits.detach().float()),
        "D/fake_score": loss_fn.score(fake_logits.detach().float()),
    }


def regularize(nets: Nets, penalties, real_img, real_logits, gen_img, fake_logits, labels, accelerator, due):
    """D's penalties for this step, weighted and summed, and their unweighted values for the log.

    WGAN-GP: lambda * E[(|grad D(x_hat)| - 1)^2] on interpolates, every D step. Lazy R1 and R2:
    (gamma / 2) * k * E[|grad D(x)|^2] on the real batch (R1) and on the generated batch (R2) every
    k-th D step; `due` says which are due. All differentiate D(augment(x)) with respect to the
    un-augmented x. Under DDP the penalty's forward runs through the DDP-wrapped D and its gradients
    are taken with create_graph=True; the one backward of the D step then puts the penalty's
    gradient into .grad, where DDP averages it across processes.
    """
    r1_due, r2_due = due
    total, stats = real_logits.new_zeros(()), {}
    if penalties.gp_weight > 0:
        x_hat = interpolate(real_img.detach(), gen_img.detach()).requires_grad_(True)
        gp = gradient_penalty(input_gradients(run_D(nets, x_hat, labels), x_hat, accelerator))
        total = total + penalties.gp_weight * gp
        stats["penalty/gp"] = gp.detach()
    if r1_due:
        r1 = r1_penalty(input_gradients(real_logits, real_img, accelerator))
        total = total + (penalties.r1_weight / 2 * penalties.r1_every) * r1
        stats["penalty/r1"] = r1.detach()
    if r2_due:
        r2 = r1_penalty(input_gradients(fake_logits, gen_img, accelerator))
        total = total + (penalties.r2_weight / 2 * penalties.r1_every) * r2
        stats["penalty/r2"] = r2.detach()
    return total, stats


def input_gradients(outputs: torch.Tensor, inputs: torch.Tensor, accelerator) -> torch.Tensor:
    """d(sum of D's outputs)/d(inputs), keeping the graph so that a penalty on it trains D.

    With a GradScaler (fp16) the outputs are scaled before autograd.grad and the gradients
    unscaled after, as the PyTorch AMP examples prescribe for gradient penalties: unscaled
    fp16 gradients could underflow to zero.
    """
    scaler = accelerator.scaler if accelerator is not None else None
    total = outputs.float().sum()
    if scaler is not None:
        total = scaler.scale(total)
    (grads,) = torch.autograd.grad(total, inputs, create_graph=True)
    if scaler is not None:
        grads = grads / scaler.get_scale()
    return grads


def g_step(nets: Nets, loss_fn, batch_size: int, labels, accelerator, real_img=None) -> dict:
    """One G update through a frozen D (on augmented images when augment.policy is set).

    D's weights need no gradient here, and under DDP its forward runs in `no_sync`
    so D does not all-reduce gradients it will never use. A relativistic loss (loss_fn.g_needs_real)
    compares with D's outputs on `real_img`, a real batch, constants for G.
    """
    nets.D.requires_grad_(False)
    try:
        gen_img = nets.G(sample_z(batch_size, nets.z_dim, labels.device), labels)
        with accelerator.no_sync(nets.D):
            fake_logits = run_D(nets, gen_img, labels)
            with accelerator.autocast():
                if loss_fn.g_needs_real:
                    with torch.no_grad():
                        real_logits = run_D(nets, real_img, labels)
                    g_loss = loss_fn.g_loss(fake_logits.float(), real_logits.float())
                else:
                    g_loss = loss_fn.g_loss(loss_fn.g_top_k(fake_logits.float()))
            nets.opt_G.zero_grad(set_to_none=True)
            accelerator.backward(g_loss)
    finally:
        nets.D.requires_grad_(True)
    if not all_finite(g_loss, accelerator):
        nets.opt_G.zero_grad(set_to_none=True)
        raise NonFiniteLoss("g_loss")
    nets.opt_G.step()
    return {"loss/G": g_loss.detach()}


