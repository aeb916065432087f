"""The one-call step (D sees the real and the generated batch in one call) trains as the two-call step did:
the same losses at every step and the same weights and buffers after a few steps, to fp32 rounding, for
every preset family, with the one stated change: spectral norm runs one power iteration per call of D,
so one per D step where it ran one per batch. And spectral norm's compile-safe form equals torch's,
state_dict keys included."""

import pytest
import torch
from accelerate import Accelerator
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm
from two_call_steps import d_step as two_call_d_step
from two_call_steps import g_step as two_call_g_step

from gan.augment import DiffAugment
from gan.config import load_config
from gan.losses import build_loss
from gan.networks import build_networks
from gan.networks._layers import SpectralNorm, SplitBatchNorm2d, add_spectral_norm
from gan.steps import Nets, d_step, g_step

BATCH, G_STEPS = 8, 3
# Adam moves a weight by about lr whatever the size of its gradient: with its default eps a gradient
# element near 0 flips the weight's step on a rounding difference. With this eps a step is smooth in the
# gradient, so the two steps' fp32 rounding stays rounding after a few updates.
ADAM_EPS = 1e-3
SMALL = ["model.g_channels=8", "model.d_channels=8", "train.n_critic=2"]
# every preset family, and the step's branches: BatchNorm D, spectral norm, projection D, WGAN-GP,
# R1 + R2 with the relativistic loss, lazy R1 alone, top-k, DiffAugment with p < 1
CASES = {
    "vanilla_mnist": ["model.hidden_dim=32"],
    "dcgan_mnist (BatchNorm D)": [],
    "dcgan_mnist (BatchNorm D, rpgan, DiffAugment)": ["loss.name=rpgan", "augment.policy=[translation,cutout,color]"],
    # top-k apart from DiffAugment: a rounding difference between two logits at the top-k boundary
    # may pick the other image, a legitimate outcome of rounding that no tolerance covers
    "sngan_mnist (top-k)": ["loss.top_k=0.5"],
    "cgan_mnist (DiffAugment p=0.5)": ["augment.policy=[translation,cutout,color]", "augment.p=0.5"],
    "wgan_gp_mnist": ["augment.policy=[translation]"],
    "dcgan_mnist (lazy R1 alone, layer norm)": ["model.d_norm=layer", "loss.r1_weight=1.0", "loss.r1_every=2"],
    "sngan_cifar10 (resnet)": ["data.name=mnist5k"],
    "wgan_gp_cifar10 (resnet)": ["data.name=mnist5k"],
    "r3gan_mnist (R1 + R2)": ["model.widths=[16,16,16]", "model.group_size=8"],
}


def train_steps(case: str, one_call: bool):
    preset = case.split()[0]
    cfg = load_config(f"configs/{preset}.yaml", [*SMALL, *CASES[case]])
    torch.manual_seed(0)
    G, D = build_networks(cfg, num_classes=10)
    for module in D.modules():  # the stated change (test below): the power iteration is held for this comparison
        if isinstance(module, SpectralNorm):
            module.eval()
    betas = tuple(cfg.optim.betas)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=betas, eps=ADAM_EPS, fused=True)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_d, betas=betas, eps=ADAM_EPS, fused=True)
    nets = Nets(G, D, None, opt_G, opt_D, z_dim=G.z_dim, augment=DiffAugment(cfg.augment.policy, cfg.augment.p))
    loss_fn, accelerator = build_loss(cfg), Accelerator(cpu=True)
    shape = (BATCH, cfg.data.channels, cfg.data.resolution, cfg.data.resolution)
    steps = (d_step, g_step) if one_call else (two_call_d_step, two_call_g_step)
    losses, done = [], 0
    for _ in range(G_STEPS):
        for _ in range(cfg.train.n_critic):
            real, labels = torch.rand(shape) * 2 - 1, torch.randint(0, 10, (BATCH,))
            stats = steps[0](nets, loss_fn, real, labels, accelerator, done)
            done += 1
        stats |= steps[1](nets, loss_fn, BATCH, labels, accelerator, real if loss_fn.g_needs_real else None)
        losses.append({name: value.item() for name, value in stats.items()})
    return losses, G.state_dict() | {f"D.{k}": v for k, v in D.state_dict().items()}


@pytest.mark.parametrize("case", CASES)
def test_one_call_step_trains_as_the_two_call_step(case):
    one_losses, one_weights = train_steps(case, one_call=True)
    two_losses, two_weights = train_steps(case, one_call=False)
    assert one_losses[0].keys() == two_losses[0].keys()
    for step, (one, two) in enumerate(zip(one_losses, two_losses, strict=True)):
        for name in one:
            assert one[name] == pytest.approx(two[name], rel=1e-4, abs=1e-5), f"{name} at G step {step}"
    assert one_weights.keys() == two_weights.keys()
    for name in one_weights:
        torch.testing.assert_close(one_weights[name], two_weights[name], rtol=1e-4, atol=1e-5,
                                   msg=lambda text, name=name: f"{name}: {text}")


def test_the_d_step_runs_one_power_iteration_per_spectral_norm():
    cfg = load_config("configs/sngan_mnist.yaml", SMALL)
    torch.manual_seed(0)
    G, D = build_networks(cfg)
    norm = D.main[0].parametrizations.weight
    matrix, v = norm.original.detach().flatten(1).clone(), norm[0]._v.clone()
    opt_D = torch.optim.Adam(D.parameters(), fused=True)
    nets = Nets(G, D, None, None, opt_D, z_dim=G.z_dim)
    d_step(nets, build_loss(cfg), torch.rand(BATCH, 1, 28, 28) * 2 - 1, torch.zeros(BATCH, dtype=torch.long),
           Accelerator(cpu=True))  # fmt: skip
    u = torch.nn.functional.normalize(matrix @ v, dim=0)
    torch.testing.assert_close(norm[0]._u, u)  # one iteration from the previous v: the two-call step ran two
    torch.testing.assert_close(norm[0]._v, torch.nn.functional.normalize(matrix.T @ u, dim=0))


def test_batch_norm_of_a_split_batch_equals_one_call_per_part():
    torch.manual_seed(0)
    split, plain = SplitBatchNorm2d(3), nn.BatchNorm2d(3)
    x, y = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5) * 3 + 1
    split.splits = 2
    torch.testing.assert_close(split(torch.cat([x, y])), torch.cat([plain(x), plain(y)]))
    assert split.state_dict().keys() == plain.state_dict().keys()
    for name, value in plain.state_dict().items():  # running statistics updated twice, in order
        torch.testing.assert_close(split.state_dict()[name], value)


def spectral_normed(ours: bool):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(8 * 4 * 4, 1))
    embed = nn.Embedding(10, 8)
    if ours:
        add_spectral_norm(net), add_spectral_norm(embed)
    else:
        for layer in (net[0], net[3], embed):
            spectral_norm(layer)
    return nn.ModuleDict({"net": net, "embed": embed})


def test_spectral_norm_equals_torchs_and_loads_its_state_dict():
    ours, torchs = spectral_normed(True), spectral_normed(False)
    assert ours.state_dict().keys() == torchs.state_dict().keys()
    for opt_module in (ours, torchs):
        opt = torch.optim.Adam(opt_module.parameters(), lr=1e-2)
        torch.manual_seed(1)
        for _ in range(4):  # D(real) - D(fake): two training forwards, each a power iteration, one backward
            x = torch.randn(4, 3, 8, 8)
            loss = opt_module["net"](x).mean() - opt_module["net"](x.flip(-1)).mean() + opt_module["embed"].weight.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    for name, value in torchs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, rtol=1e-6, atol=1e-7, msg=name)
    fresh = spectral_normed(True)
    fresh.load_state_dict(torchs.state_dict())  # a checkpoint written with torch's spectral norm
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fresh.eval()["net"](x), torchs.eval()["net"](x))


def test_spectral_norm_compiles_in_one_graph():
    net = spectral_normed(True)["net"]
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)  # dynamo + autograd tracing, no C++ compiler
    u = net[0].parametrizations.weight[0]._u.clone()
    x = torch.randn(2, 3, 8, 8)
    compiled(x).sum().backward()
    assert not torch.equal(net[0].parametrizations.weight[0]._u, u)  # the power iteration's update reached the buffer
    assert net[0].parametrizations.weight.original.grad is not None
