"""The convolutional families at every size they accept, in-process.

Sizes up to 64 px must build the networks they built before 128 and 256 px were added, so that old
checkpoints load and seeded runs repeat: tests/network_params_28_to_64px.json lists, for each size,
channel count, conditional or not and D norm, every state_dict entry's name, shape and sum right
after a seeded build, recorded with the code before the change. Never regenerate it to make this
test pass. At 128 and 256 px: the output shapes and a training step's gradients. Other sizes: the
one-line error. And the parameter counts (64 to 256 px) that docs/configuration.md states, shown
with `pytest -rP`.
"""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gan.config import load_config
from gan.errors import GanError
from gan.networks import build_networks
from gan.networks._layers import MinibatchStd
from gan.networks._resolutions import check_resolution, supported_resolutions

RECORDED = Path(__file__).with_name("network_params_28_to_64px.json")
D_NORMS = {"dcgan": ("batch", "layer", "none"), "resnet": ("none",)}
OLD_SIZES = {"dcgan": (28, 32, 64), "resnet": (28, 32, 48, 64)}
NEW_SIZES = (128, 256)
NUM_CLASSES = 10
# G and D parameters at the default widths (model.g_channels = model.d_channels = 64, model.z_dim = 100),
# 3 channels, unconditional: the numbers in docs/configuration.md
DEFAULT_WIDTH_PARAMS = {
    ("dcgan", 64): (3_576_704, 2_765_568),
    ("resnet", 64): (418_371, 342_785),
    ("dcgan", 128): (7_772_032, 6_960_896),
    ("dcgan", 256): (11_967_360, 11_156_224),
    ("resnet", 128): (31_692_035, 38_419_137),
    ("resnet", 256): (36_676_355, 43_401_409),
}


def config(network: str, resolution: int, *extra: str):
    return load_config(None, [f"model.network={network}", f"data.resolution={resolution}", *extra])


def listing(module: torch.nn.Module) -> list[str]:
    """The line "name shape sum" for each state_dict entry, in order: what a checkpoint holds, and the init."""
    return [f"{name} {'x'.join(map(str, t.shape)) or '-'} {t.double().sum().item():.6g}"
            for name, t in module.state_dict().items()]  # fmt: skip


def recorded_networks(network: str, resolution: int) -> dict[str, list[str]]:
    """The listings of every variant at one size, keyed as in the recorded file."""
    found = {}
    for channels in (1, 3):
        for conditional in (False, True):
            for norm in D_NORMS[network]:
                cfg = config(network, resolution, f"data.channels={channels}", f"model.d_norm={norm}",
                             f"model.conditional={str(conditional).lower()}")  # fmt: skip
                torch.manual_seed(0)
                G, D = build_networks(cfg, NUM_CLASSES if conditional else 0)
                name = f"{network} {resolution}px {channels}ch {'conditional' if conditional else 'unconditional'}"
                found.setdefault(f"{name} G", listing(G))
                found[f"{name} D d_norm={norm}"] = listing(D)
    return found


@pytest.mark.parametrize(("network", "resolution"), [(n, r) for n, sizes in OLD_SIZES.items() for r in sizes])
def test_sizes_up_to_64px_build_the_recorded_networks(network, resolution):
    recorded = json.loads(RECORDED.read_text())
    prefix = f"{network} {resolution}px "
    expected = {key: value for key, value in recorded.items() if key.startswith(prefix)}
    built = recorded_networks(network, resolution)
    assert sorted(built) == sorted(expected)
    for key, lines in built.items():
        # names and shapes exactly; the sums (float64 over float32 weights) to rounding
        names_and_shapes = [line.rsplit(" ", 1)[0] for line in lines]
        assert names_and_shapes == [line.rsplit(" ", 1)[0] for line in expected[key]], key
        for line, old in zip(lines, expected[key], strict=True):
            new_sum, old_sum = float(line.rsplit(" ", 1)[1]), float(old.rsplit(" ", 1)[1])
            assert math.isclose(new_sum, old_sum, rel_tol=1e-5, abs_tol=1e-5), f"{key}: {line} != {old}"


def new_size_cases():
    """Every option at 3 channels; the channel count changes only the first and last layers."""
    for network, norms in D_NORMS.items():
        for resolution in NEW_SIZES:
            for conditional in (False, True):
                for norm in norms:
                    for spectral in (False, True):
                        yield network, resolution, 3, conditional, norm, spectral
            yield network, resolution, 1, False, norms[0], False


@pytest.mark.parametrize(("network", "resolution", "channels", "conditional", "norm", "spectral"),
                         list(new_size_cases()))  # fmt: skip
def test_g_makes_and_d_reads_128_and_256px(network, resolution, channels, conditional, norm, spectral):
    cfg = config(network, resolution, f"data.channels={channels}", f"model.d_norm={norm}",
                 f"model.conditional={str(conditional).lower()}", f"model.spectral_norm={str(spectral).lower()}",
                 "model.g_channels=2", "model.d_channels=2")  # fmt: skip
    torch.manual_seed(0)
    G, D = build_networks(cfg, NUM_CLASSES if conditional else 0)
    labels = torch.tensor([0, NUM_CLASSES - 1])
    with torch.no_grad():
        images = G(torch.randn(2, G.z_dim), labels)
        logits = D(images, labels)
    assert images.shape == (2, channels, resolution, resolution)
    assert images.abs().max() <= 1
    assert logits.shape == (2,) and torch.isfinite(logits).all()


@pytest.mark.parametrize("network", ["dcgan", "resnet"])
def test_a_training_step_at_256px_reaches_every_parameter(network):
    """D's and G's non-saturating losses backpropagate to every weight of both, finitely.

    Conditional with spectral norm: every kind of weight (conditional BatchNorm, projection) takes part.
    """
    cfg = config(network, 256, "data.channels=3", "model.g_channels=2", "model.d_channels=2",
                 "model.conditional=true", "model.spectral_norm=true")  # fmt: skip
    torch.manual_seed(0)
    G, D = build_networks(cfg, NUM_CLASSES)
    real, labels = torch.rand(2, 3, 256, 256) * 2 - 1, torch.tensor([0, NUM_CLASSES - 1])
    fake = G(torch.randn(2, G.z_dim), labels)
    d_loss = F.softplus(-D(real, labels)).mean() + F.softplus(D(fake.detach(), labels)).mean()
    d_loss.backward()
    for name, p in D.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"D.{name}"
    D.zero_grad()
    g_loss = F.softplus(-D(fake, labels)).mean()
    g_loss.backward()
    for name, p in G.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"G.{name}"


def test_parameter_counts_at_the_default_widths():
    """Built on the meta device: shapes without memory or init. Printed; `pytest -rP` shows them."""
    counts = {}
    for network, resolution in DEFAULT_WIDTH_PARAMS:
        with torch.device("meta"):
            G, D = build_networks(config(network, resolution, "data.channels=3"))
        counts[network, resolution] = tuple(sum(p.numel() for p in net.parameters()) for net in (G, D))
        g, d = counts[network, resolution]
        print(f"{network:6} {resolution:3} px, widths 64: G {g:>10,} ({g / 1e6:.2f} M)  D {d:>10,} ({d / 1e6:.2f} M)")  # fmt: skip
    assert counts == DEFAULT_WIDTH_PARAMS


@pytest.mark.parametrize("network", ["dcgan", "resnet"])
@pytest.mark.parametrize("resolution", [40, 96, 100, 512, 1024])
def test_other_sizes_are_one_error_line_before_any_network_is_built(network, resolution):
    legal = ", ".join(map(str, supported_resolutions(network)))
    expected = f"data.resolution={resolution} cannot be produced by model.network={network}; choose one of: {legal}"  # fmt: skip
    cfg = config(network, resolution)
    with pytest.raises(GanError) as cheap:
        check_resolution(cfg)
    with pytest.raises(GanError) as built:
        build_networks(cfg)
    assert str(cheap.value) == str(built.value) == expected


def test_supported_resolutions():
    assert supported_resolutions("dcgan") == (28, 32, 64, 128, 256)
    assert supported_resolutions("resnet") == (28, 32, 48, 64, 128, 256)
    assert supported_resolutions("mlp") is None  # no LAYOUTS: its builder takes any size
    check_resolution(config("mlp", 100))
    with pytest.raises(GanError, match="model.network: unknown network 'vgg'"):
        supported_resolutions("vgg")


@pytest.mark.parametrize("resolution", [28, 64])
@pytest.mark.parametrize("norm", ["batch", "none"])
def test_dcgan_extra_layers_add_a_trained_3x3_conv_per_stage(resolution, norm):
    """model.g_extra_layers / model.d_extra_layers: that many 3x3 stride-1 convs at each of G's hidden
    stages and after each of D's stride-2 convs, keeping the sides; every one of them is trained, and
    the other convs are those of the network without them."""
    base = config("dcgan", resolution, "model.g_channels=4", "model.d_channels=4", f"model.d_norm={norm}",
                  "model.conditional=true")  # fmt: skip
    deep = config("dcgan", resolution, "model.g_channels=4", "model.d_channels=4", f"model.d_norm={norm}",
                  "model.conditional=true", "model.g_extra_layers=2", "model.d_extra_layers=1")  # fmt: skip
    (G0, D0), (G, D) = build_networks(base, NUM_CLASSES), build_networks(deep, NUM_CLASSES)
    stages = {28: 2, 64: 4}[resolution]  # G's hidden stages = D's stride-2 convs

    def convs(net, kernel=None):  # kernel None: the other convs, transposed or not
        kinds = torch.nn.Conv2d | torch.nn.ConvTranspose2d
        return [m for m in net.modules() if isinstance(m, kinds) and (m.kernel_size == (3, 3)) == (kernel == 3)]

    assert (len(convs(G0, 3)), len(convs(D0, 3))) == (0, 0)
    assert (len(convs(G, 3)), len(convs(D, 3))) == (2 * stages, stages)
    assert [m.stride for m in convs(G, 3) + convs(D, 3)] == [(1, 1)] * 3 * stages
    # the stride-2 layers are those of the network without extra layers, same shapes, same order
    for deep_net, plain in ((G, G0), (D, D0)):
        assert [m.weight.shape for m in convs(deep_net)] == [m.weight.shape for m in convs(plain)]
    labels = torch.tensor([0, NUM_CLASSES - 1])
    fake = G(torch.randn(2, G.z_dim), labels)
    assert fake.shape == (2, 1, resolution, resolution)
    loss = F.softplus(-D(fake, labels)).mean()
    loss.backward()
    for m in convs(G, 3) + convs(D, 3):
        assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("override", "message"), [
    ("model.g_extra_layers=-1", "model.g_extra_layers must be in [0, 16], got -1"),
    ("model.d_extra_layers=17", "model.d_extra_layers must be in [0, 16], got 17"),
])  # fmt: skip
def test_extra_layers_out_of_range_are_one_line(override, message):
    with pytest.raises(GanError) as error:
        config("dcgan", 28, override)
    assert str(error.value) == message


def test_extra_layers_are_refused_for_other_networks():
    with pytest.raises(GanError) as error:
        config("resnet", 28, "model.d_extra_layers=1")
    assert str(error.value) == "model.d_extra_layers=1 applies to model.network=dcgan only, not resnet; set it to 0"


def test_minibatch_std_adds_one_channel_per_group_and_keeps_the_parts_of_a_batch_apart():
    """model.d_mbstd_group: D's last feature map gains a channel holding, for each group of that many
    consecutive images, the mean over features of their standard deviation. run_D scores the real and
    the generated batch in one call: a group of identical images next to a varied one keeps its ~0."""
    layer = MinibatchStd(4)
    same = torch.randn(1, 3, 2, 2).expand(8, 3, 2, 2)  # the first part: one image, 8 times
    varied = torch.randn(8, 3, 2, 2)
    out = layer(torch.cat([same, varied]))
    assert out.shape == (16, 4, 2, 2) and torch.equal(out[:, :3], torch.cat([same, varied]))
    channel = out[:, 3]
    assert channel[:8].max() < 1e-3  # sqrt of the 1e-8 that keeps the root's gradient finite
    # each group of the varied part: its own population std, the same at every image and position
    expected = torch.stack([g.var(0, unbiased=False).add(1e-8).sqrt().mean() for g in varied.split(4)])
    assert torch.allclose(channel[8:].reshape(2, 4 * 2 * 2), expected[:, None].expand(2, 16))


def test_dcgan_mbstd_widens_d_last_conv_and_projection_by_one_channel():
    base = config("dcgan", 28, "model.d_channels=4", "model.conditional=true")
    mbstd = config("dcgan", 28, "model.d_channels=4", "model.conditional=true", "model.d_mbstd_group=4")
    (_, D0), (_, D) = build_networks(base, NUM_CLASSES), build_networks(mbstd, NUM_CLASSES)
    width = D0.main[-1].weight.shape[1]  # the last conv's input channels: D's widest stage
    assert D.main[-1].weight.shape[1] == width + 1
    assert D.projection.embed.weight.shape[1] == (width + 1) * 7 * 7
    assert sum(p.numel() for p in D.parameters()) - sum(p.numel() for p in D0.parameters()) == 7 * 7 * (1 + NUM_CLASSES)
    images, labels = torch.randn(8, 1, 28, 28, requires_grad=True), torch.arange(8) % NUM_CLASSES
    D(images, labels).sum().backward()
    assert images.grad.abs().sum() > 0


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.d_mbstd_group=1"], "model.d_mbstd_group must be 0 (off) or in [2, 64], got 1"),
    (["model.d_mbstd_group=65"], "model.d_mbstd_group must be 0 (off) or in [2, 64], got 65"),
    (["model.d_mbstd_group=3"], "model.d_mbstd_group=3 must divide train.batch_size=64: D groups the images of "
                                "each batch"),
    (["model.network=resnet", "model.d_mbstd_group=4"],
     "model.d_mbstd_group=4 applies to model.network=dcgan only, not resnet; set it to 0"),
])  # fmt: skip
def test_mbstd_group_errors_are_one_line(overrides, message):
    with pytest.raises(GanError) as error:
        config("dcgan", 28, "train.batch_size=64", *overrides)
    assert str(error.value) == message


DEEP_AS_RUN = [("selfcond_mnist_deep", "selfcond_mnist", ["model.g_extra_layers=1"]),
               ("selfcond_mnist_deep", "selfcond_mnist_g64", ["model.g_channels=32", "model.g_extra_layers=1"]),
               ("cgan_mnist_deep", "cgan_mnist", ["model.g_extra_layers=1"])]  # fmt: skip


@pytest.mark.parametrize(("deep", "base", "overrides"), DEEP_AS_RUN)
def test_a_deep_preset_is_the_base_preset_and_overrides_its_readme_row_was_trained_with(deep, base, overrides):
    """selfcond_mnist_deep's README row, and cgan_mnist_deep's first three seeds (docs/results.md, the
    ninth search), were trained as another preset with --set overrides: the resolved configs must differ
    in the preset's name only."""
    presets = Path(__file__).resolve().parents[1] / "configs"
    made = dataclasses.asdict(load_config(presets / f"{deep}.yaml"))
    expected = dataclasses.asdict(load_config(presets / f"{base}.yaml", overrides))
    assert made.pop("preset") == deep and expected.pop("preset") == base
    assert made == expected
