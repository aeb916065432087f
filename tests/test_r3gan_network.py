"""model.network=r3gan (gan/networks/r3gan.py), in-process: small widths, except for the paper's networks.

The official parameter counts below were obtained by building the official networks: R3GAN/Networks.py of
github.com/brownvc/R3GAN at commit 19a7ddf (unmodified, with its torch_utils), constructed with the kwargs of
the official train.py presets (CIFAR10: widths [768] * 4, cardinality [96] * 4, blocks [2] * 4, noise 64, and
for --cond=1 condition dimension 10 with embeddings 64 in G and 768 in D; FFHQ-256: widths
[768, 768, 768, 768, 384, 192, 96], cardinality [96, 96, 96, 96, 48, 24, 12], blocks [2] * 7; expansion 2; D
given the lists reversed) and summing p.numel() over .parameters() (a script, /tmp/r3gan_count/count.py, on
CPU; the resampling kernels are buffers and not counted). Our networks, whose resampling kernels are buffers
too, reproduce them exactly. (With the official weights copied in, layer for layer, our G and D also gave the
official outputs to 1e-6 at 32 and 64 px, conditional or not: checked by hand, not here, since the official
code is no dependency of ours.)
"""

from pathlib import Path

import pytest
import torch
import yaml

from gan.config import load_config, to_dict
from gan.data import to_uint8
from gan.errors import GanError
from gan.networks import build_networks
from gan.networks.r3gan import LAYOUTS, Resample, ResidualBlock
from gan.run_folder import RunFolder, check_same_experiment, stored_config

PRESET = Path(__file__).parent.parent / "configs" / "dcgan_mnist.yaml"

NUM_CLASSES = 10
SMALL = ["model.network=r3gan", "model.g_channels=16", "model.d_channels=16", "model.blocks=1", "model.z_dim=8"]
CIFAR10 = ["data.resolution=32", "model.widths=[768,768,768,768]"]
FFHQ256 = ["data.resolution=256", "model.widths=[768,768,768,768,384,192,96]"]
PAPER = ["model.network=r3gan", "data.channels=3", "model.z_dim=64", "model.blocks=2", "model.expansion=2",
         "model.group_size=16"]  # fmt: skip
# (G, D) parameters of the official networks (see the module docstring)
OFFICIAL_PARAMS = {
    "CIFAR-10 conditional": (CIFAR10 + ["model.conditional=true"], 20_781_952, 21_280_512),
    "CIFAR-10 unconditional": (CIFAR10, 20_732_160, 20_683_776),
    "FFHQ-256": (FFHQ256, 23_057_952, 23_009_568),
}


def config(*overrides: str):
    return load_config(None, list(overrides))


def labels_for(conditional: bool, n: int) -> torch.Tensor | None:
    return torch.arange(n) % NUM_CLASSES if conditional else None


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("label", OFFICIAL_PARAMS)
def test_the_papers_networks_have_the_official_parameter_counts(label):
    overrides, official_G, official_D = OFFICIAL_PARAMS[label]
    cfg = config(*PAPER, *overrides)
    with torch.device("meta"):  # shapes only: no memory, no initialisation work
        G, D = build_networks(cfg, NUM_CLASSES if cfg.model.conditional else 0)
    print(f"{label}: G {count(G):,} (official {official_G:,}), D {count(D):,} (official {official_D:,})")
    assert count(G) == official_G  # exact; the task asked for 1%
    assert count(D) == official_D


def branch_outputs(net: torch.nn.Module, *inputs) -> list[torch.Tensor]:
    """The output of every residual branch of net in one forward pass, caught by forward hooks."""
    found: list[torch.Tensor] = []
    blocks = [m for m in net.modules() if isinstance(m, ResidualBlock)]
    handles = [b.branch.register_forward_hook(lambda _m, _i, out: found.append(out)) for b in blocks]
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    assert len(found) == len(blocks)
    return found


@pytest.mark.parametrize("conditional", [False, True])
def test_every_residual_branch_outputs_zero_at_initialisation(conditional):
    cfg = config(*SMALL, "data.resolution=64", "data.channels=3", "model.blocks=[1,2,1,1,2]",
                 f"model.conditional={str(conditional).lower()}")  # fmt: skip
    G, D = build_networks(cfg, NUM_CLASSES if conditional else 0)
    labels = labels_for(conditional, 4)
    for net, inputs in ((G, torch.randn(4, G.z_dim)), (D, torch.randn(4, 3, 64, 64))):
        found = branch_outputs(net, inputs, labels)
        assert len(found) == 7  # 1 + 2 + 1 + 1 + 2 blocks
        for out in found:
            assert out.abs().max() == 0  # the last 1x1 conv is zero: each block starts as the identity


def test_the_fixup_gain_scales_the_branch_convs_as_the_official_init():
    # CIFAR-10: L = 8 blocks, gain sqrt(2 / 1.04) * 8^(-1/4); the spec's (and the official init's) stds
    cfg = config(*PAPER, *CIFAR10)
    torch.manual_seed(0)
    G, D = build_networks(cfg)
    for net in (G, D):
        block = next(m for m in net.modules() if isinstance(m, ResidualBlock))
        expand, grouped, project = block.branch[0], block.branch[2], block.branch[4]
        assert grouped.groups == 96 and grouped.weight.shape == (1536, 16, 3, 3)
        assert expand.weight.std().item() == pytest.approx(0.029754, rel=0.01)
        assert grouped.weight.std().item() == pytest.approx(0.068714, rel=0.01)
        assert project.weight.abs().max() == 0
        assert not any(m.bias is not None for m in net.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("resolution", sorted(LAYOUTS))
@pytest.mark.parametrize("conditional", [False, True])
def test_every_supported_resolution_conditional_or_not(resolution, conditional):
    channels = 3 if resolution > 28 else 1
    cfg = config(*SMALL, f"data.resolution={resolution}", f"data.channels={channels}",
                 f"model.conditional={str(conditional).lower()}")  # fmt: skip
    G, D = build_networks(cfg, NUM_CLASSES if conditional else 0)
    labels = labels_for(conditional, 2)
    with torch.no_grad():
        images = G(torch.randn(2, G.z_dim), labels)
        assert images.shape == (2, channels, resolution, resolution)
        assert torch.isfinite(images).all() and images.std() > 0
        assert D(images, labels).shape == (2,)
    assert (G.embed is not None) == conditional and (D.embed is not None) == conditional


def test_a_training_step_at_256px_reaches_every_layer():
    cfg = config(*SMALL, "data.resolution=256", "data.channels=3", "model.conditional=true",
                 "model.widths=[32,32,16,16,16,16,16]")  # fmt: skip
    torch.manual_seed(0)
    G, D = build_networks(cfg, NUM_CLASSES)
    labels = labels_for(True, 2)
    images = G(torch.randn(2, G.z_dim), labels)
    assert images.shape == (2, 3, 256, 256)
    D(images, labels).sum().backward()
    for name, p in [*G.named_parameters(prefix="G"), *D.named_parameters(prefix="D")]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # With the branches' last convs at zero, only they and the layers outside the branches learn at first
    for net in (G, D):
        for block in (m for m in net.modules() if isinstance(m, ResidualBlock)):
            assert block.branch[4].weight.grad.abs().max() > 0
            assert block.branch[0].weight.grad.abs().max() == 0
    assert G.basis.basis.grad.abs().max() > 0 and D.from_image.weight.grad.abs().max() > 0


def test_the_resampling_kernel_is_the_official_1_3_3_1_with_zero_padded_borders():
    # [1, 2, 1] convolved with [1, 1]: up is bilinear with half-pixel centres, down averages 4x4 pixels
    # weighted 1 3 3 1; outside the image counts as 0, so a constant image fades at its borders
    ones = torch.ones(1, 1, 4, 4)
    up = Resample(1, up=True)(ones)[0, 0]
    assert up.shape == (8, 8)
    assert up[1:-1, 1:-1].eq(1).all() and up[0, 3] == 0.75 and up[0, 0] == 0.75**2
    down = Resample(1, up=False)(torch.ones(1, 1, 8, 8))[0, 0]
    assert down.shape == (4, 4)
    assert down[1:-1, 1:-1].eq(1).all() and down[0, 2] == 7 / 8 and down[0, 0] == (7 / 8) ** 2
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    assert torch.allclose(Resample(1, up=True)(ramp)[0, 0, 2, 2:6], torch.tensor([0.75, 1.25, 1.75, 2.25]))


def test_config_keys_are_checked():
    cases = {
        "model.widths=[]": "model.widths must be null or a non-empty list of ints in [1, 4096], got []",
        "model.widths=[64,0]": "model.widths must be null or a non-empty list of ints in [1, 4096], got [64, 0]",
        "model.blocks=-1": "model.blocks must be an int in [0, 64] or a non-empty list of them, got -1",
        "model.blocks=[2,100]": "model.blocks must be an int in [0, 64] or a non-empty list of them, got [2, 100]",
        "model.expansion=0": "model.expansion must be > 0, got 0",
        "model.group_size=10000": "model.group_size must be in [1, 4096], got 10000",
        "model.widths=64": "model.widths: expected list of int or null, got 64",
    }
    for override, message in cases.items():
        with pytest.raises(GanError) as err:
            config("model.network=r3gan", override)
        assert str(err.value) == message, override


def test_the_network_refuses_what_it_cannot_build():
    cases = {
        ("data.resolution=48",): "data.resolution=48 cannot be produced by model.network=r3gan; "
        "choose one of: 28, 32, 64, 128, 256",
        ("model.widths=[64,64]",): "model.widths=[64, 64]: model.network=r3gan at data.resolution=28 has 3 stages; "
        "give 3 values",
        ("model.blocks=[1,1,1,1]",): "model.blocks=[1, 1, 1, 1]: model.network=r3gan at data.resolution=28 has "
        "3 stages; give 3 values",
        ("model.group_size=24",): "model.group_size=24 must divide model.expansion x each stage's width "
        "(2 x 64 = 128)",
        ("model.spectral_norm=true",): "model.spectral_norm=true is not available for model.network=r3gan (it has "
        "no normalisation layers); choose model.spectral_norm=false",
        ("model.d_norm=batch",): "model.d_norm=batch is not available for model.network=r3gan; choose one of: none",
        ("model.d_norm=layer",): "model.d_norm=layer is not available for model.network=r3gan; choose one of: none",
    }
    for overrides, message in cases.items():
        with pytest.raises(GanError) as err:
            build_networks(config("model.network=r3gan", *overrides))
        assert str(err.value) == message, overrides
    build_networks(config("model.network=r3gan", "model.d_norm=none", "model.g_channels=16", "model.d_channels=16"))


def test_the_other_networks_ignore_the_r3gan_keys():
    for network in ("dcgan", "resnet", "mlp"):
        plain = config(f"model.network={network}")
        torch.manual_seed(0)
        G, D = build_networks(plain)
        keys = ["model.widths=[8,8,8]", "model.blocks=5", "model.expansion=3", "model.group_size=5"]
        torch.manual_seed(0)
        G2, D2 = build_networks(config(f"model.network={network}", *keys))
        for a, b in ((G, G2), (D, D2)):
            assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(),
                                                         strict=True))  # fmt: skip


def test_a_run_folder_written_before_these_keys_still_resumes(tmp_path):
    # the default preset's run folder as the code before the r3gan keys wrote it: its resolved config without them
    new = load_config(PRESET)
    old = to_dict(new)
    for key in ("widths", "blocks", "expansion", "group_size"):
        del old["model"][key]
    RunFolder(tmp_path).config.write_text(yaml.safe_dump(old, sort_keys=False))
    stored = stored_config(tmp_path)
    assert stored == new  # the missing keys read as their defaults
    check_same_experiment(stored, new, tmp_path)  # raises on any changed key


def test_g_has_no_tanh_and_its_samples_are_clamped_when_quantised():
    G, _ = build_networks(config(*SMALL))
    with torch.no_grad():
        G.to_image.weight.mul_(100)  # the last layer is this linear 1x1 conv: nothing squashes its output
        images = G(torch.randn(64, G.z_dim))
    assert images.abs().max() > 100
    pixels = to_uint8(images)  # what the sample grids, gan.generate and the evaluator see
    assert pixels.min() == 0 and pixels.max() == 255  # clamped, not wrapped around
