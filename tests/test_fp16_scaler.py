"""fp16: Accelerate keeps one GradScaler for both optimizers. An overflow in D's step must skip D's
update and lower the scale, and leave G's next step exactly what a clean G step at that scale does.

Accelerate's fp16 needs a GPU (it refuses fp16 on a CPU), so this runs where CUDA is; bench/gpu.py's
lease ran it (README, Performance).
"""

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="Accelerate's fp16 GradScaler needs a CUDA GPU; none here")  # fmt: skip

ROOT = Path(__file__).resolve().parents[1]


def fresh_run(init_scale: float = 2.0**16):
    """Accelerator(fp16) and the dcgan_mnist preset's networks and fused Adams, from one seed."""
    from accelerate import Accelerator, GradScalerKwargs
    from accelerate.state import AcceleratorState, GradientState

    from gan.config import load_config
    from gan.data import build_data, make_dataloader, to_float
    from gan.losses import build_loss
    from gan.train_loop import build_nets

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    accelerator = Accelerator(mixed_precision="fp16", kwargs_handlers=[GradScalerKwargs(init_scale=init_scale)])
    cfg = load_config(ROOT / "configs" / "dcgan_mnist.yaml", ["train.batch_size=16", "data.limit=64"])
    data = build_data(cfg).to(accelerator.device)
    torch.manual_seed(0)
    nets, loader = build_nets(cfg, data.num_classes, accelerator, make_dataloader(data, 16))
    real, labels = next(iter(loader))
    return accelerator, nets, build_loss(cfg), to_float(real), labels


def params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_overflow_in_d_step_skips_d_and_leaves_g_step_intact():
    from gan.steps import d_step, g_step

    torch.backends.cudnn.deterministic = True
    # the run whose D step overflows: every gradient of D's first weight becomes inf
    accelerator, nets, loss_fn, real, labels = fresh_run()
    scale_before = accelerator.scaler.get_scale()
    D, G = accelerator.unwrap_model(nets.D), accelerator.unwrap_model(nets.G)
    d_before, g_before = params(D), params(G)
    hook = next(D.parameters()).register_hook(lambda grad: grad * float("inf"))
    d_step(nets, loss_fn, real, labels, accelerator)  # the loss is finite: only the scaled gradients overflow
    hook.remove()
    assert all(torch.equal(a, b) for a, b in zip(d_before, params(D), strict=True)), "D was updated"
    assert accelerator.scaler.get_scale() == scale_before / 2, "the overflow did not lower the scale"
    torch.manual_seed(1)
    g_step(nets, loss_fn, len(real), labels, accelerator)
    g_after_overflow = params(G)

    # the reference: the same networks, no D step, the scale already lowered, the same G step
    accelerator, nets, loss_fn, real, labels = fresh_run(init_scale=scale_before / 2)
    G = accelerator.unwrap_model(nets.G)
    assert all(torch.equal(a, b) for a, b in zip(g_before, params(G), strict=True))
    torch.manual_seed(1)
    g_step(nets, loss_fn, len(real), labels, accelerator)
    g_reference = params(G)

    moved = max((a - b).abs().max().item() for a, b in zip(g_after_overflow, g_before, strict=True))
    assert moved > 0, "G did not step after D's overflow"
    assert all(torch.isfinite(p).all() for p in g_after_overflow)
    for a, b in zip(g_after_overflow, g_reference, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
