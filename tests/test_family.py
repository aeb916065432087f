"""The GAN family: losses and penalties against hand computations, spectral norm, DiffAugment,
every preset in 1 and 2 processes, the penalty's gradient under DDP, and conditional generation."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import ACCELERATE, PYTHON, ROOT, TINY, base_env, free_port, run, train
from PIL import Image
from safetensors.torch import load_file

from gan.augment import DiffAugment
from gan.checkpoint import load_generator
from gan.checkpoint.training import check_lecam_state
from gan.config import load_config
from gan.errors import GanError
from gan.losses import (
    LOSSES,
    LeCamAnchors,
    Penalties,
    build_loss,
    gradient_penalty,
    lecam_penalty,
    r1_penalty,
)
from gan.networks import build_networks
from gan.samples import generate_images
from gan.steps import Nets, input_gradients, regularize

REAL = [2.0, -1.0, 0.5]
FAKE = [-3.0, 0.0, 1.5]
NO_SCALER = SimpleNamespace(scaler=None)


def mean(values):
    return sum(values) / len(values)


def softplus(x):
    return math.log1p(math.exp(x))


# Each loss by hand, from its paper's formula: (D loss, G loss) on REAL and FAKE.
HAND = {
    "bce": (mean([softplus(-r) for r in REAL]) + mean([softplus(f) for f in FAKE]), mean([softplus(-f) for f in FAKE])),
    "hinge": (mean([max(0, 1 - r) for r in REAL]) + mean([max(0, 1 + f) for f in FAKE]), -mean(FAKE)),
    "lsgan": (0.5 * mean([(r - 1) ** 2 for r in REAL]) + 0.5 * mean([f**2 for f in FAKE]),
              0.5 * mean([(f - 1) ** 2 for f in FAKE])),
    "wgan": (mean(FAKE) - mean(REAL), -mean(FAKE)),
    "rpgan": (mean([softplus(-(r - f)) for r, f in zip(REAL, FAKE, strict=True)]),
              mean([softplus(-(f - r)) for r, f in zip(REAL, FAKE, strict=True)])),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(HAND))
def test_loss_matches_the_hand_computation(name):
    loss = LOSSES.get(name)()
    d_loss = loss.d_loss(torch.tensor(REAL), torch.tensor(FAKE))
    g_loss = loss.g_loss(torch.tensor(FAKE), torch.tensor(REAL)) if loss.g_needs_real else loss.g_loss(torch.tensor(FAKE))
    assert d_loss.item() == pytest.approx(HAND[name][0], rel=1e-6)
    assert g_loss.item() == pytest.approx(HAND[name][1], rel=1e-6)


def test_every_registered_loss_is_checked_by_hand():
    assert sorted(HAND) == LOSSES.names()


class LinearCritic(torch.nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere, so the penalties are known in closed form."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w).view(1, 1, 2, 2))

    def forward(self, x, labels=None):
        return (self.w * x).flatten(1).sum(1)


def test_gradient_penalty_and_r1_match_the_hand_computation():
    w = [1.0, 2.0, 2.0, 0.0]  # |w| = 3
    D = LinearCritic(w)
    x = torch.randn(5, 1, 2, 2, requires_grad=True)
    (grads,) = input_gradients([D(x)], [x], NO_SCALER)
    gp, r1 = gradient_penalty(grads), r1_penalty(grads)
    assert gp.item() == pytest.approx((3 - 1) ** 2)
    assert r1.item() == pytest.approx(3**2)
    # The penalty trains D: d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|, through create_graph.
    (dw,) = torch.autograd.grad(gp, D.w)
    assert dw.flatten().tolist() == pytest.approx([2 * (3 - 1) * v / 3 for v in w])


def test_gradients_under_a_grad_scaler_equal_the_unscaled_ones():
    # fp16's GradScaler scales the output before autograd.grad; input_gradients unscales (AMP docs).
    D = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x = torch.randn(6, 1, 2, 2, requires_grad=True)
    plain = input_gradients([D(x)], [x], NO_SCALER)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    scaled = input_gradients([D(x)], [x], SimpleNamespace(scaler=scaler))
    torch.testing.assert_close(scaled, plain)


def test_regularize_weights_gp_and_lazy_r1():
    D = LinearCritic([0.0, 0.0, 3.0, 4.0])  # |w| = 5
    nets = Nets(None, D, None, None, None, z_dim=1)
    penalties = Penalties(gp_weight=10.0, r1_weight=2.0, r1_every=4)
    real = torch.randn(3, 1, 2, 2, requires_grad=True)
    fake = torch.randn(3, 1, 2, 2)
    labels = torch.zeros(3, dtype=torch.long)
    total, stats = regularize(nets, penalties, real, D(real), fake, D(fake), labels, NO_SCALER, due=(True, False))
    # lambda (|w| - 1)^2 + gamma / 2 * k * |w|^2
    assert total.item() == pytest.approx(10 * 4**2 + 2 / 2 * 4 * 5**2)
    assert set(stats) == {"penalty/gp", "penalty/r1"}
    assert [i for i in range(9) if penalties.r1_due(i)] == [0, 4, 8]  # D steps done before this one
    assert not Penalties(r1_weight=0.0).r1_due(0)


def test_lecam_anchors_and_penalty_match_the_hand_computation():
    anchors = LeCamAnchors(decay=0.5)
    # one update: the zero-debiased averages are that step's means
    assert anchors.update(torch.tensor([1.0, 3.0]), torch.tensor([-2.0])).tolist() == [2.0, -2.0]
    # two: (0.5 * 0.5 * mean_1 + 0.5 * mean_2) / (1 - 0.5 ** 2)
    second = anchors.update(torch.tensor([4.0]), torch.tensor([0.0]))
    torch.testing.assert_close(second, torch.tensor([(0.25 * 2 + 0.5 * 4) / 0.75, (0.25 * -2 + 0) / 0.75]))
    assert anchors.state[2].item() == 2
    before = anchors.state.clone()  # a non-finite step (stopped at or skipped) leaves them as they were
    anchors.update(torch.tensor([float("nan")]), torch.tensor([0.0]))
    assert torch.equal(anchors.state, before)
    # relu(real - a_fake)^2: (5^2 + 1^2) / 2; relu(a_real - fake)^2: (4^2 + 0) / 2
    real, fake = torch.tensor([4.0, 0.0]), torch.tensor([-3.0, 1.0])
    assert lecam_penalty(real, fake, torch.tensor([1.0, -1.0])).item() == pytest.approx(13 + 8)
    # regularize adds it with its weight on every D step, its anchors taken from this step's outputs too
    D = LinearCritic([0.0, 0.0, 3.0, 4.0])
    nets = Nets(None, D, None, None, None, z_dim=1, lecam=LeCamAnchors(decay=0.9))
    x, y = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    total, stats = regularize(nets, Penalties(lecam_weight=0.3), x, D(x), y, D(y), torch.zeros(3, dtype=torch.long),
                              SimpleNamespace(scaler=None, num_processes=1), due=(False, False))  # fmt: skip
    expected = lecam_penalty(D(x), D(y), torch.stack([D(x).mean(), D(y).mean()]))
    assert total.item() == pytest.approx(0.3 * expected.item(), rel=1e-5)
    assert set(stats) == {"penalty/lecam"}


def test_a_checkpoint_without_valid_lecam_anchors_does_not_fit_a_lecam_run():
    check_lecam_state(None, None)  # LeCam off: nothing to check
    check_lecam_state(torch.tensor([0.5, -0.5, 3.0]), LeCamAnchors(0.99))
    for bad in (None, torch.zeros(2), torch.tensor([0.0, float("nan"), 1.0]), torch.zeros(3, dtype=torch.long), [0.0] * 3):
        with pytest.raises(ValueError, match="no valid LeCam anchors"):
            check_lecam_state(bad, LeCamAnchors(0.99))


def largest_singular_values(D):
    """sigma_max of each weight D uses, as the (out, in * k * k) matrix spectral norm normalises."""
    return {name: torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
            for name, m in D.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear | torch.nn.Embedding)}  # fmt: skip


@pytest.mark.parametrize("network", ["dcgan", "resnet"])
def test_spectral_norm_keeps_the_largest_singular_value_near_one(network):
    overrides = [f"model.network={network}", "model.d_channels=16", "model.g_channels=16", "model.d_norm=none",
                 "model.conditional=true", "loss.name=hinge"]  # fmt: skip
    torch.manual_seed(0)
    _, D = build_networks(load_config(None, [*overrides, "model.spectral_norm=true"]), num_classes=10)
    opt = torch.optim.Adam(D.parameters(), lr=0.05)  # big steps that would move sigma far from 1
    x, labels = torch.randn(8, 1, 28, 28), torch.arange(8)
    for _ in range(3):
        opt.zero_grad()
        D(x, labels).square().mean().backward()
        opt.step()
    for _ in range(10):  # power iterations, one per training forward
        D(x, labels)
    sigmas = largest_singular_values(D)
    assert len(sigmas) >= 4
    assert all(abs(s - 1) < 0.05 for s in sigmas.values()), sigmas
    _, plain = build_networks(load_config(None, overrides), num_classes=10)
    assert any(abs(s - 1) > 0.2 for s in largest_singular_values(plain).values())


def test_diffaugment_is_differentiable_and_does_what_it_says():
    torch.manual_seed(0)
    x = -torch.ones(16, 3, 32, 32)
    x[:, :, 16, 16] = 1.0  # one bright pixel per image
    moved = DiffAugment(["translation"])(x)
    positions = [tuple(torch.nonzero(img[0] == 1.0)[0].tolist()) for img in moved]
    assert all(abs(r - 16) <= 4 and abs(c - 16) <= 4 for r, c in positions)  # 1/8 of 32 px
    assert len(set(positions)) > 1
    cut = DiffAugment(["cutout"])(torch.ones(16, 1, 32, 32))
    zeros = (cut == 0).flatten(1).sum(1)
    assert ((zeros > 0) & (zeros <= 16 * 16)).all() and (zeros == 16 * 16).any()
    coloured = DiffAugment(["color"])(x)
    assert coloured.mean((1, 2, 3)).std() > 0.05  # brightness differs per image
    leaf = torch.randn(4, 3, 32, 32, requires_grad=True)
    DiffAugment(["translation", "cutout", "color"])(leaf).sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0
    assert DiffAugment([])(x) is x
    with pytest.raises(
        GanError, match="augment.policy: unknown augmentation 'flip'; choose one of: color, cutout"
    ):
        DiffAugment(["flip"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["loss.name=wgan"], "loss.name=wgan needs a constraint on D"),
        (["train.n_critic=0"], "train.n_critic must be > 0"),
        (["loss.gp_weight=-1"], "loss.gp_weight must be >= 0"),
        (["loss.lecam_weight=-0.1"], "loss.lecam_weight must be >= 0"),
        (["loss.lecam_decay=1"], r"loss.lecam_decay must be in \[0, 1\), got 1"),
        (["model.d_norm=instance"], "model.d_norm: unknown value 'instance'"),
        (["augment.policy=[cutout,cutout]"], "augment.policy lists a transform twice"),
    ],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(GanError, match=message):
        load_config(None, overrides)


def test_build_errors_name_the_key():
    with pytest.raises(GanError, match="model.d_norm=layer or model.d_norm=none"):
        build_networks(load_config(None, ["loss.gp_weight=10"]), 10)  # dcgan's BatchNorm D
    with pytest.raises(GanError, match="model.network=mlp has no conditional variant"):
        build_networks(load_config(None, ["model.network=mlp", "model.conditional=true"]), 10)
    with pytest.raises(GanError, match="needs labelled data"):
        build_networks(load_config(None, ["model.conditional=true"]), 1)
    loss = build_loss(load_config(None, ["loss.name=hinge", "loss.r1_weight=1", "loss.r1_every=16"]))
    assert loss.penalties == Penalties(r1_weight=1.0, r1_every=16)


# --------------------------------------------------------------------------- presets, end to end


@pytest.fixture(scope="session")
def rgb_folder(tmp_path_factory):
    """48 small RGB PNGs in 3 class sub-folders: CIFAR-shaped data without a download."""
    root = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(0)
    for k in range(3):
        (root / f"class{k}").mkdir()
        for i in range(16):
            pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            pixels[..., k] = 255  # the class is the saturated channel
            Image.fromarray(pixels).save(root / f"class{k}" / f"{i}.png")
    return root


PRESETS = ["wgan_gp_mnist", "sngan_mnist", "cgan_mnist", "selfcond_mnist", "dcgan_cifar10", "wgan_gp_cifar10",
           "sngan_cifar10", "r3gan_mnist", "r3gan_cifar10", "r3gan_ffhq256"]  # fmt: skip
# R3GAN's presets at the paper's widths would take minutes per step here: the same stages, narrow
NARROW = {"r3gan_cifar10": ["model.widths=[16,16,16,16]"],
          "r3gan_ffhq256": ["model.widths=[16,16,16,16,8,8,8]", "model.blocks=1", "train.batch_size=4"]}  # fmt: skip


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains(tmp_path, rgb_folder, preset, processes):
    overrides = [*TINY, "train.steps=4", "train.checkpoint_every=2", "train.sample_every=4"]
    if preset.endswith("cifar10") or preset.endswith("ffhq256"):
        overrides += ["data.name=image_folder", f"data.root={rgb_folder}", "data.limit=null"]
    overrides += NARROW.get(preset, [])
    run_dir = tmp_path / "run"
    train(preset, run_dir, *overrides, processes=processes)
    assert (run_dir / "FINISHED").read_text().strip() == "4"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    logged = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [2, 4]
    for row in logged:
        assert np.isfinite(row["loss/D"]) and np.isfinite(row["loss/G"])
        if "gp" in preset:
            assert np.isfinite(row["penalty/gp"]) and row["penalty/gp"] > 0
    state = torch.load(run_dir / "checkpoints" / "step-0000004" / "state.pt", weights_only=True)
    n_critic = state["config"]["train"]["n_critic"]
    assert state["batches_seen"] == 4 * n_critic  # every D step drew its own real batch
    if processes == 2:
        digests = json.loads((run_dir / "replicas.json").read_text())["rank_digests"]
        assert len(digests) == 2 and digests[0] == digests[1]


def test_resume_with_critic_steps_and_penalties_equals_no_interruption(tmp_path):
    # 5 D steps per G step draw 5 batches each: the data position and the RNG must both resume exactly.
    settings = [*TINY, "train.steps=6", "train.checkpoint_every=3", "loss.r1_weight=1", "loss.r1_every=3",
                "augment.policy=[translation,cutout,color]"]  # fmt: skip
    train("wgan_gp_mnist", tmp_path / "straight", *settings)
    train("wgan_gp_mnist", tmp_path / "stopped", *settings, "train.steps=3")
    train("wgan_gp_mnist", tmp_path / "stopped", *settings)
    for name in ("G", "D", "G_ema"):
        a = load_file(tmp_path / "straight" / "checkpoints" / "step-0000006" / f"{name}.safetensors")
        b = load_file(tmp_path / "stopped" / "checkpoints" / "step-0000006" / f"{name}.safetensors")
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=f"{name}.{key}")


def probe_gradients(tmp_path, processes: int) -> dict:
    out = tmp_path / f"grads{processes}.safetensors"
    launch = [ACCELERATE, "launch", "--num_processes", str(processes), "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    if processes > 1:
        launch += ["--multi_gpu", "--main_process_port", str(free_port())]
    run([*launch, ROOT / "tests" / "penalty_probe.py", out], env=base_env(ACCELERATE_USE_CPU="1"), check=True)
    return load_file(out)


def test_penalty_gradient_in_two_processes_equals_one(tmp_path):
    one, two = probe_gradients(tmp_path, 1), probe_gradients(tmp_path, 2)
    assert sorted(one) == sorted(two) and any("projection" in name for name in one)
    for name in one:
        # Biases only shift where the piecewise-linear D bends: its input gradient does not depend on them.
        if not name.endswith("bias"):
            assert one[name].abs().sum() > 0, f"{name} got no gradient from the penalty"
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-6, msg=name)


# --------------------------------------------------------------------------- conditional generation


def nearest_class_mean(images: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    return torch.cdist(images.float().flatten(1), means).argmin(1)


def test_conditional_generation_draws_the_class_asked_for(tmp_path):
    # A nearest-class-mean classifier of the 5,000 digits: no training, and about 80% right on real digits.
    from gan.data import as_tensor, build_data

    data = build_data(load_config(None, []))
    images = as_tensor(data.images)
    pixels = images.float().flatten(1)
    means = torch.stack([pixels[data.labels == k].mean(0) for k in range(10)])
    real_accuracy = (nearest_class_mean(images, means) == data.labels).float().mean().item()
    assert real_accuracy > 0.6
    # About 25 s of cgan_mnist, small and fast: all 5,000 digits (the first 512 are all zeros).
    run_dir = tmp_path / "cgan"
    train("cgan_mnist", run_dir, "train.steps=400", "train.batch_size=32", "model.g_channels=16", "model.d_channels=16",
          "optim.lr_g=5.0e-4", "optim.lr_d=5.0e-4", "augment.policy=[]", "train.checkpoint_every=400",
          "train.sample_every=400", "train.log_every=100")  # fmt: skip
    # Every class, from the generator that gan.generate loads; an unconditional G scores about 0.1.
    G, _, _ = load_generator(run_dir)
    labels = torch.arange(500) % 10
    z = torch.randn(500, G.z_dim, generator=torch.Generator().manual_seed(0))
    predicted = nearest_class_mean(generate_images(G, z, labels), means)
    accuracies = [(predicted[labels == k] == k).float().mean().item() for k in range(10)]
    assert mean(accuracies) > 0.6 * real_accuracy, accuracies
    assert sum(a > 0.3 for a in accuracies) >= 8, accuracies
    # The command line's --class, for two of them.
    for k in (3, 8):
        out = tmp_path / f"class{k}"
        run(
            [PYTHON, "-m", "gan.generate", run_dir, "--class", str(k), "--num", "40", "--out", out],
            check=True,
        )
        images = torch.stack([torch.from_numpy(np.array(Image.open(p))) for p in sorted(out.glob("*.png"))])
        assert len(images) == 40
        assert (nearest_class_mean(images, means) == k).float().mean().item() > 0.6 * real_accuracy
