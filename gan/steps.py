"""The named parts of one training step: d_step (with regularize), g_step, update_ema.

Each returns detached tensors for the logger; nothing here calls `.item()`, so the step
never waits on the device except for the one finiteness check per optimizer step (and,
under fp16 with a gradient penalty, one read of the GradScaler's scale).

Each network is called once per phase: D sees the real and the generated batch in one call, their
concatenation (run_D), except where a penalty is due (regularize) and rpgan's real batch in G's step
outside CUDA graphs (g_step); the outputs
equal separate calls' because every D here treats each image on its own, BatchNorm included
(SplitBatchNorm2d normalises each part with its own statistics). docs/performance.md says why.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from gan.losses import LeCamAnchors, gradient_penalty, interpolate, lecam_penalty, r1_penalty
from gan.networks._layers import SplitBatchNorm2d


def no_augment(images: torch.Tensor) -> torch.Tensor:
    return images


@dataclass
class Nets:
    """The prepared (possibly DDP-wrapped) networks and optimizers of a run."""

    G: nn.Module
    D: nn.Module
    G_ema: nn.Module | None
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    z_dim: int
    num_classes: int = 0  # classes in the data (checkpoints store it); G uses them if conditional
    class_counts: list[int] = field(default_factory=list)  # images per class: generation draws by them
    augment: Callable[[torch.Tensor], torch.Tensor] = no_augment  # DiffAugment on every input of D
    ema_rate: "EmaRate | None" = None  # G_ema's decay, read at each update
    cudagraphs: bool = False  # train.compile=reduce-overhead on CUDA: each phase starts a CUDA graph step
    lecam: LeCamAnchors | None = None  # LeCam's anchors where loss.lecam_weight > 0
    d_batch_norms: list = field(init=False)  # D's SplitBatchNorm2d layers, told how many parts a call has

    def __post_init__(self):
        self.d_batch_norms = [m for m in self.D.modules() if isinstance(m, SplitBatchNorm2d)]


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


def compile_networks(mode: str, networks, device: torch.device, say=print) -> bool:
    """train.compile: each network's forward compiled in place (nn.Module.compile), so the module, its
    state_dict keys and DDP's wrapping stay as they are. True when the step runs CUDA graphs."""
    if mode == "none":
        return False
    if mode == "reduce-overhead" and device.type != "cuda":
        say(f"warning: train.compile=reduce-overhead captures CUDA graphs, which need a CUDA device; on "
            f"{device.type} G and D are compiled with mode default")  # fmt: skip
        mode = "default"
    for network in networks:
        network.compile(mode=mode)
    return mode == "reduce-overhead"


def start_phase(nets: Nets) -> None:
    """Under CUDA graphs (reduce-overhead) a new step: the graphs may reuse the memory of the last phase's
    outputs, none of which is kept past its phase (the logged values are computed from them eagerly)."""
    if nets.cudagraphs:
        torch.compiler.cudagraph_mark_step_begin()


def run_D(nets: Nets, parts: list[torch.Tensor], labels: torch.Tensor) -> list[torch.Tensor]:
    """D's outputs on each batch in `parts`, from one call of D on their concatenation.

    Each part is augmented on its own first, so DiffAugment draws its random numbers as separate calls
    did; real, generated and interpolated images all pass the same pipeline. Every part has the batch's
    labels. A BatchNorm D normalises each part with that part's statistics (SplitBatchNorm2d).
    """
    images = [nets.augment(part) for part in parts]
    if len(parts) == 1:
        return [nets.D(images[0], labels)]
    for norm in nets.d_batch_norms:
        norm.splits = len(parts)
    try:
        logits = nets.D(torch.cat(images), labels.repeat(len(parts)))
    finally:
        for norm in nets.d_batch_norms:
            norm.splits = 1
    return list(logits.split([len(part) for part in parts]))


def d_step(nets: Nets, loss_fn, real_img, labels, accelerator, d_steps_done: int = 0) -> dict:
    """One D update on a real batch and a batch from the current G, with the configured penalties.

    d_steps_done counts the D steps before this one (the data position); lazy R1 and R2 run when it
    is a multiple of loss.r1_every.
    """
    penalties = loss_fn.penalties
    r1_due, r2_due = penalties.r1_due(d_steps_done), penalties.r2_due(d_steps_done)
    start_phase(nets)
    with torch.no_grad():  # no graph through G, and no DDP reducer armed for it
        gen_img = nets.G(sample_z(len(real_img), nets.z_dim, real_img.device), labels)
    # R1 and R2 differentiate D(x) w.r.t. x, real and generated
    real_img = real_img.detach().requires_grad_(r1_due)
    gen_img = gen_img.detach().requires_grad_(r2_due)
    if not (r1_due or r2_due):
        real_logits, fake_logits = run_D(nets, [real_img, gen_img], labels)
    else:  # R1 or R2 due: a call per half, so that each double backward covers its half only
        (real_logits,), (fake_logits,) = run_D(nets, [real_img], labels), run_D(nets, [gen_img], labels)
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
    un-augmented x. On a step where R1 or R2 is due, d_step calls D once per half, so that each
    double backward covers its own half (one shared call measured 9% slower for R3GAN on a CPU); R1
    and R2 due together take both gradients in one autograd.grad. The interpolates get a call of their
    own: in the real and generated batch's call the penalty's double backward would run over three
    batches instead of one.
    LeCam: lambda * (E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2]) every D step, on the
    outputs the loss took, its anchors first updated with them (gan.losses.LeCamAnchors).
    Under DDP the penalty's forward runs through the DDP-wrapped D and its gradients
    are taken with create_graph=True; the one backward of the D step then puts the penalty's
    gradient into .grad, where DDP averages it across processes.
    """
    r1_due, r2_due = due
    total, stats = real_logits.new_zeros(()), {}
    if penalties.gp_weight > 0:
        x_hat = interpolate(real_img.detach(), gen_img.detach()).requires_grad_(True)
        (x_hat_logits,) = run_D(nets, [x_hat], labels)
        (grads,) = input_gradients([x_hat_logits], [x_hat], accelerator)
        gp = gradient_penalty(grads)
        total = total + penalties.gp_weight * gp
        stats["penalty/gp"] = gp.detach()
    if penalties.lecam_weight > 0:
        anchors = nets.lecam.update(real_logits, fake_logits, accelerator)
        lecam = lecam_penalty(real_logits.float(), fake_logits.float(), anchors)
        total = total + penalties.lecam_weight * lecam
        stats["penalty/lecam"] = lecam.detach()
    due_pairs = [(name, logits, images, weight) for name, logits, images, weight, is_due in (
        ("r1", real_logits, real_img, penalties.r1_weight, r1_due),
        ("r2", fake_logits, gen_img, penalties.r2_weight, r2_due),
    ) if is_due]  # fmt: skip
    if due_pairs:
        grads = input_gradients([p[1] for p in due_pairs], [p[2] for p in due_pairs], accelerator)
        for (name, _, _, weight), grad in zip(due_pairs, grads, strict=True):
            value = r1_penalty(grad)
            total = total + (weight / 2 * penalties.r1_every) * value
            stats[f"penalty/{name}"] = value.detach()
    return total, stats


def input_gradients(outputs: list[torch.Tensor], inputs: list[torch.Tensor], accelerator) -> tuple[torch.Tensor, ...]:
    """d(sum of D's outputs)/d(each input), keeping the graph so that a penalty on it trains D.

    With a GradScaler (fp16) the outputs are scaled before autograd.grad and the gradients
    unscaled after, as the PyTorch AMP examples prescribe for gradient penalties: unscaled
    fp16 gradients could underflow to zero.
    """
    scaler = accelerator.scaler if accelerator is not None else None
    total = sum(output.float().sum() for output in outputs)
    if scaler is not None:
        total = scaler.scale(total)
    grads = torch.autograd.grad(total, inputs, create_graph=True)
    if scaler is not None:
        scale = scaler.get_scale()
        grads = tuple(grad / scale for grad in grads)
    return grads


def g_step(nets: Nets, loss_fn, batch_size: int, labels, accelerator, real_img=None) -> dict:
    """One G update through a frozen D (on augmented images when augment.policy is set).

    D's weights need no gradient here, and under DDP its forward runs in `no_sync`
    so D does not all-reduce gradients it will never use. A relativistic loss (loss_fn.g_needs_real)
    compares with D's outputs on `real_img`, a real batch, constants for G: from the generated batch's
    call of D under CUDA graphs, else from a call of its own without autograd graph.
    """
    start_phase(nets)
    nets.D.requires_grad_(False)
    try:
        gen_img = nets.G(sample_z(batch_size, nets.z_dim, labels.device), labels)
        with accelerator.no_sync(nets.D):
            if loss_fn.g_needs_real:
                if nets.cudagraphs:  # one call: a second replay would overwrite the first's outputs
                    fake_logits, real_logits = run_D(nets, [gen_img, real_img], labels)
                else:  # the real half in a call without graph: no backward through it
                    (fake_logits,) = run_D(nets, [gen_img], labels)
                    with torch.no_grad():
                        (real_logits,) = run_D(nets, [real_img], labels)
                with accelerator.autocast():
                    g_loss = loss_fn.g_loss(fake_logits.float(), real_logits.detach().float())
            else:
                (fake_logits,) = run_D(nets, [gen_img], labels)
                with accelerator.autocast():
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


class EmaRate:
    """G_ema's decay per update: ema <- ema + (1 - d) * (param - ema), after `updates` earlier updates.

    By decay (train.ema_decay): d, or with a ramp-up min(d, 1 - 1 / (rampup * updates)), so the EMA's
    time constant 1 / (1 - d) never exceeds that fraction of training. By half-life (train.ema_kimg,
    stylegan2-ada-pytorch): d = 0.5 ** (images per step / half-life in images), the half-life capped
    at rampup times the images seen; the schedule may move `half_life_kimg` from step to step.
    """

    def __init__(self, decay: float | None, rampup: float | None, half_life_kimg: float | None,
                 images_per_step: int):  # fmt: skip
        self.fixed_decay, self.rampup = decay, rampup
        self.half_life_kimg, self.images_per_step = half_life_kimg, images_per_step

    def decay(self, updates: int) -> float:
        if self.half_life_kimg is not None:
            half_life = self.half_life_kimg * 1000
            if self.rampup is not None:
                half_life = min(half_life, updates * self.images_per_step * self.rampup)
            return 0.5 ** (self.images_per_step / max(half_life, 1e-8))
        if self.rampup is None:
            return self.fixed_decay
        return min(self.fixed_decay, max(0.0, 1 - 1 / (self.rampup * updates)))

    def avg_fn(self):
        """AveragedModel's multi_avg_fn (AveragedModel reads n_averaged on the host each step anyway)."""

        @torch.no_grad()
        def update(ema_params: list, params: list, updates: torch.Tensor) -> None:
            d = self.decay(int(updates))
            if torch.is_floating_point(ema_params[0]):
                torch._foreach_lerp_(ema_params, params, 1 - d)
            else:  # integer buffers (BatchNorm's num_batches_tracked)
                for ema, param in zip(ema_params, params, strict=True):
                    ema.copy_(ema * d + param * (1 - d))

        return update


def update_ema(nets: Nets, accelerator) -> None:
    if nets.G_ema is not None:
        nets.G_ema.update_parameters(accelerator.unwrap_model(nets.G))


def grad_norm(module: nn.Module) -> torch.Tensor:
    """L2 norm of a module's current gradients (0 when it has none)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
