"""Changes to gan/ measured before they are made: our loop's step, assembled here from the
package's public pieces, with switches the package does not have.

`step_loop` runs, step after step, what gan.train_loop's loop runs: n_critic `d_step`s and one
`g_step` (gan.steps), `update_ema`, both gradient norms at the log steps, the window means
(gan.tracking.WindowMeans), read at every log step. Its networks and optimizers are those
gan.train_loop.build_nets builds, its batches those of gan.train_loop.real_batches. It writes no
run folder: no train_log.jsonl, sample grids or checkpoints. `Proposal()` is that step as the
package runs it, the baseline of the study's rows; each field changes one thing:

- adam: the optimizers rebuilt as torch.optim.Adam with torch's default implementation, or
  foreach=True, instead of build_nets's fused=True;
- grad_norms_every_step: both gradient norms every step, averaged into the window means;
- channels_last: G, D and G_ema in NHWC memory format.
"""

import time
from dataclasses import dataclass

import torch

# torch.optim.Adam's arguments per implementation; "default": torch's choice (a per-parameter loop on the CPU)
ADAM_ARGS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "default": {}}


@dataclass(frozen=True)
class Proposal:
    adam: str = "fused"  # a key of ADAM_ARGS; fused is what build_nets builds
    grad_norms_every_step: bool = False  # False: at the log steps only, as the loop does
    channels_last: bool = False


def step_loop(cfg, steps: int, log_every: int, proposal: Proposal = Proposal()) -> list[tuple[float, float]]:
    """`steps` G steps of cfg's training step; (wall, CPU) time marks at every log step."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    from gan.data import build_data, make_dataloader, to_float
    from gan.losses import build_loss
    from gan.steps import d_step, g_step, grad_norm, update_ema
    from gan.tracking import WindowMeans
    from gan.train_loop import build_nets, real_batches

    seeded = DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.train.seed)
    accelerator = Accelerator(dataloader_config=seeded)  # the loop's sampler, without its trackers
    set_seed(cfg.train.seed, device_specific=True)
    data = build_data(cfg)
    if cfg.data.on_device:
        data = data.to(accelerator.device)
    nets, loader = build_nets(cfg, data.num_classes, accelerator, make_dataloader(data, cfg.train.batch_size))
    apply(proposal, nets, cfg, accelerator)
    loss_fn = build_loss(cfg)
    means = WindowMeans(accelerator.device)
    batches = real_batches(loader, accelerator, batches_seen=0)
    sync = torch.cuda.synchronize if accelerator.device.type == "cuda" else (lambda: None)
    marks, batches_seen = [], 0
    for step in range(1, steps + 1):
        for _ in range(cfg.train.n_critic):
            real_uint8, labels = next(batches)
            real = to_float(real_uint8)
            stats = d_step(nets, loss_fn, real, labels, accelerator, batches_seen)
            batches_seen += 1
        stats |= g_step(nets, loss_fn, len(real), labels, accelerator, real if loss_fn.g_needs_real else None)
        update_ema(nets, accelerator)
        if proposal.grad_norms_every_step or step % log_every == 0:
            stats |= {"grad_norm/G": grad_norm(nets.G), "grad_norm/D": grad_norm(nets.D)}
        means.update(stats)
        if step % log_every == 0:
            means.compute()
            sync()  # on a GPU, the window's kernels end before its mark
            marks.append((time.perf_counter(), time.process_time()))
    return marks


def apply(proposal: Proposal, nets, cfg, accelerator) -> None:
    """Change the prepared networks and optimizers of build_nets in place, as `proposal` says."""
    if proposal.channels_last:  # in place: the optimizers keep the same Parameter objects
        for net in (nets.G, nets.D, nets.G_ema):
            if net is not None:
                net.to(memory_format=torch.channels_last)
    if proposal.adam != Proposal.adam:
        args = {"betas": tuple(cfg.optim.betas), **ADAM_ARGS[proposal.adam]}
        G, D = accelerator.unwrap_model(nets.G), accelerator.unwrap_model(nets.D)
        nets.opt_G = accelerator.prepare(torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, **args))
        nets.opt_D = accelerator.prepare(torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_d, **args))
