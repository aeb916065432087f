"""Launched by tests/test_family.py with `accelerate launch`: D's gradient from the penalties alone.

Every process builds the same D (projection, spectral norm, no BatchNorm) and the same global
batch of 8 images; each takes its contiguous share, runs gan.steps.regularize (WGAN-GP, R1 and R2)
through the prepared, DDP-wrapped D, and backpropagates the penalty once. The main process
writes D's parameter gradients to OUT. With DDP averaging, 2 processes x 4 images must give the
gradient of 1 process x 8 images. For WGAN-GP and R1, G's images equal the real ones, so the
interpolates equal them too and no per-process random draw enters the comparison; R2 runs on the
real images mirrored.

python tests/penalty_probe.py OUT
"""

import dataclasses
import sys

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from gan.config import load_config
from gan.losses import build_loss
from gan.networks import build_networks
from gan.steps import Nets, regularize

OVERRIDES = ["model.network=dcgan", "model.d_channels=8", "model.g_channels=8", "model.conditional=true",
             "model.spectral_norm=true", "model.d_norm=none", "loss.name=wgan", "loss.gp_weight=10",
             "loss.r1_weight=2", "loss.r2_weight=3", "loss.r1_every=4"]  # fmt: skip
BATCH = 8


def main(out: str) -> None:
    accelerator = Accelerator(cpu=True)
    cfg = load_config(None, OVERRIDES)
    torch.manual_seed(0)  # the same weights and batch on every process
    G, D = build_networks(cfg, num_classes=10)
    real_img = torch.rand(BATCH, 1, 28, 28) * 2 - 1
    labels = torch.arange(BATCH) % 10
    opt_D = torch.optim.SGD(D.parameters(), lr=0.0)
    D, opt_D = accelerator.prepare(D, opt_D)
    rank, world = accelerator.process_index, accelerator.num_processes
    share = slice(BATCH * rank // world, BATCH * (rank + 1) // world)
    real_img, labels = real_img[share].requires_grad_(True), labels[share]
    nets = Nets(G, D, None, None, opt_D, z_dim=cfg.model.z_dim, num_classes=10)
    gen_img = real_img.detach().flip(-1).requires_grad_(True)  # R2's "generated" images: the real ones mirrored
    real_logits, fake_logits = nets.D(real_img, labels), nets.D(gen_img, labels)
    penalties = build_loss(cfg).penalties
    # WGAN-GP and R1 with G's images equal to the real ones: the interpolates equal them whatever the
    # per-process random weights; then R2 alone on the mirrored images
    gp_r1 = dataclasses.replace(penalties, r2_weight=0.0)
    r2 = dataclasses.replace(penalties, gp_weight=0.0, r1_weight=0.0)
    first, _ = regularize(nets, gp_r1, real_img, real_logits, real_img.detach(), real_logits, labels, accelerator,
                          due=(True, False))  # fmt: skip
    second, _ = regularize(nets, r2, real_img, real_logits, gen_img, fake_logits, labels, accelerator,
                           due=(False, True))  # fmt: skip
    penalty = first + second
    # D's last bias does not change its input gradients; the zero term keeps it in the graph, as
    # the D loss does in training, so that DDP's reducer sees every parameter used.
    accelerator.backward(penalty + 0.0 * (real_logits.sum() + fake_logits.sum()))
    if accelerator.is_main_process:
        grads = {name: p.grad.detach().clone() for name, p in accelerator.unwrap_model(D).named_parameters()}
        save_file(grads, out)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # destroys the process group: a gloo process exiting with it alive can abort


if __name__ == "__main__":
    main(sys.argv[1])
