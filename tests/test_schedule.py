"""Schedules (gan/schedule.py), G_ema by half-life, the augmentation probability; a resume continues a schedule."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from helpers import TINY, train
from safetensors.torch import load_file

from gan.augment import DiffAugment
from gan.config import load_config
from gan.errors import GanError
from gan.losses import build_loss
from gan.schedule import Schedule, ramp
from gan.steps import EmaRate


def test_ramp_shapes():
    assert [ramp("constant", 2.0, None, t) for t in (0, 0.5, 1)] == [2.0, 2.0, 2.0]
    assert [ramp("linear", 2.0, 4.0, t) for t in (-1, 0, 0.25, 1, 3)] == [2.0, 2.0, 2.5, 4.0, 4.0]
    assert ramp("cosine", 2.0, 4.0, 0.5) == pytest.approx(3.0)
    assert ramp("cosine", 2.0, 4.0, 0.25) == pytest.approx(2.0 + (1 - math.cos(math.pi / 4)) / 2 * 2.0)
    assert ramp("cosine", 2.0, 4.0, 1.0) == pytest.approx(4.0) and ramp("cosine", 2.0, 4.0, 9.0) == pytest.approx(4.0)


def test_schedule_values_over_a_kimg_horizon_then_held():
    cfg = load_config(None, ["optim.lr_g=2e-4", "schedule.kimg=1", "schedule.lr_g.shape=linear",
                             "schedule.lr_g.end=1e-4", "optim.betas=[0,0.9]", "schedule.beta2.shape=cosine",
                             "schedule.beta2.end=0.99"])  # fmt: skip
    schedule = Schedule(cfg, images_per_step=100)  # 1 kimg = 10 steps
    assert schedule.values(0)["lr_g"] == pytest.approx(2e-4)
    assert schedule.values(5)["lr_g"] == pytest.approx(1.5e-4)
    assert schedule.values(10)["lr_g"] == schedule.values(50)["lr_g"] == pytest.approx(1e-4)
    assert schedule.values(5)["beta2"] == pytest.approx(0.945)
    assert schedule.values(5)["lr_d"] == pytest.approx(cfg.optim.lr_d)  # not scheduled: its own value
    assert schedule.ramped() == ["lr_g", "beta2"]
    over_steps = Schedule(load_config(None, ["train.steps=40", "schedule.lr_d.shape=linear",
                                             "schedule.lr_d.end=1e-5"]), images_per_step=64)  # fmt: skip
    assert over_steps.values(20)["lr_d"] == pytest.approx((2e-4 + 1e-5) / 2)


@pytest.mark.parametrize("overrides, needle", [
    (["schedule.lr_g.shape=cosine"], "needs schedule.lr_g.end"),
    (["schedule.lr_g.end=1e-4"], "schedule.lr_g.shape is constant"),
    (["schedule.beta2.shape=linear", "schedule.beta2.end=1"], "schedule.beta2.end must be in [0, 1)"),
    (["schedule.ema_kimg.shape=linear", "schedule.ema_kimg.end=5"], "set train.ema_kimg"),
    (["train.ema_kimg=10"], "train.ema_kimg and train.ema_decay both set"),
    (["augment.p=1.5"], "augment.p must be in [0, 1]"),
    (["schedule.kimg=0"], "schedule.kimg must be > 0"),
    (["loss.top_k=0"], "loss.top_k must be in (0, 1]"),
    (["schedule.top_k.shape=linear", "schedule.top_k.end=0"], "schedule.top_k.end must be in (0, 1]"),
    (["loss.name=rpgan", "loss.top_k=0.5"], "loss.top_k with loss.name=rpgan"),
    (["schedule.lr_g.shape=sine"], "choose one of: constant, linear, cosine"),
])  # fmt: skip
def test_schedule_config_errors_are_one_line(overrides, needle):
    with pytest.raises(GanError) as err:
        load_config(None, overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_top_k_takes_the_images_D_scores_highest_on_its_schedule():
    cfg = load_config(None, ["loss.name=hinge", "train.steps=10", "schedule.top_k.shape=linear", "schedule.top_k.end=0.5"])
    loss_fn, schedule = build_loss(cfg), Schedule(cfg, images_per_step=4)
    logits = torch.tensor([[2.0], [-1.0], [0.5], [3.0]])
    nets = SimpleNamespace(opt_G=torch.optim.Adam([torch.zeros(1)]), opt_D=torch.optim.Adam([torch.zeros(1)]),
                           augment=None, ema_rate=None)  # fmt: skip
    schedule.apply(0, nets, loss_fn)
    assert loss_fn.top_k == 1.0 and loss_fn.g_loss(loss_fn.g_top_k(logits)) == pytest.approx(-4.5 / 4)
    schedule.apply(10, nets, loss_fn)  # the ramp's end: the best 2 of 4
    assert loss_fn.top_k == 0.5 and loss_fn.g_loss(loss_fn.g_top_k(logits)) == pytest.approx(-(3.0 + 2.0) / 2)
    loss_fn.top_k = 0.3  # ceil(0.3 x 4) = 2
    assert sorted(loss_fn.g_top_k(logits).tolist()) == [2.0, 3.0]


def test_ema_half_life_as_stylegan2_ada_defines_it():
    rate = EmaRate(None, None, half_life_kimg=10.0, images_per_step=64)
    assert rate.decay(5) == pytest.approx(0.5 ** (64 / 10_000))
    ramped = EmaRate(None, 0.05, half_life_kimg=10.0, images_per_step=64)
    assert ramped.decay(100) == pytest.approx(0.5 ** (64 / (100 * 64 * 0.05)))  # capped by the ramp-up
    assert ramped.decay(10_000) == pytest.approx(0.5 ** (64 / 10_000))
    assert EmaRate(None, None, 0.0, 64).decay(3) == 0.0  # a half-life of 0: G_ema follows G
    fixed = EmaRate(0.999, 0.1, None, 64)  # by decay with ramp-up, as before
    assert fixed.decay(20) == pytest.approx(1 - 1 / 2) and fixed.decay(10**6) == 0.999


def test_augmentation_probability_per_image():
    x = torch.zeros(2000, 1, 8, 8)
    torch.manual_seed(0)
    assert torch.equal(DiffAugment(["cutout"], p=0.0)(x + 1), x + 1)
    changed = (DiffAugment(["cutout"], p=0.3)(x + 1) != 1).flatten(1).any(1).float().mean().item()
    assert abs(changed - 0.3) < 0.05
    torch.manual_seed(0)
    everything = DiffAugment(["cutout"], p=1.0)(x + 1)
    torch.manual_seed(0)
    assert torch.equal(everything, DiffAugment(["cutout"])(x + 1))  # p = 1: every image, no extra draws


SCHEDULED = ["loss.name=rpgan", "loss.r1_weight=0.2", "loss.r2_weight=0.2", "model.d_norm=none",
             "schedule.r1_weight.shape=cosine", "schedule.r1_weight.end=0.02", "schedule.lr_g.shape=cosine",
             "schedule.lr_g.end=5e-5", "optim.betas=[0,0.9]", "schedule.beta2.shape=linear",
             "schedule.beta2.end=0.99", "train.ema_decay=null", "train.ema_kimg=0", "schedule.ema_kimg.shape=cosine",
             "schedule.ema_kimg.end=0.5", "augment.policy=[translation,cutout]", "augment.p=0",
             "schedule.augment_p.shape=cosine", "schedule.augment_p.end=0.6", "schedule.kimg=0.2"]  # fmt: skip


def test_a_resume_continues_the_schedule_exactly(tmp_path):
    """12 steps straight against 6 + 6 with every schedulable value ramped (horizon 0.2 kimg = 12.5 steps)."""
    settings = [*TINY, *SCHEDULED, "train.checkpoint_every=6", "train.sample_every=6"]
    train("dcgan_mnist", tmp_path / "straight", *settings, "train.steps=12")
    train("dcgan_mnist", tmp_path / "stopped", *settings, "train.steps=6")
    resumed = train("dcgan_mnist", tmp_path / "stopped", *settings, "train.steps=12")
    assert "resuming from" in resumed.stdout + resumed.stderr
    for name in ("G", "D", "G_ema"):
        a = load_file(tmp_path / "straight" / "checkpoints" / "step-0000012" / f"{name}.safetensors")
        b = load_file(tmp_path / "stopped" / "checkpoints" / "step-0000012" / f"{name}.safetensors")
        for key in a:
            assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), f"{name}.{key}"
    logged = [json.loads(line) for line in (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()]
    lr = [r["sched/lr_g"] for r in logged]
    assert lr == sorted(lr, reverse=True) and lr[0] < 2e-4 and lr[-1] > 5e-5
    assert {"sched/r1_weight", "sched/beta2", "sched/ema_kimg", "sched/augment_p"} <= set(logged[-1])
    meta = json.loads((tmp_path / "straight" / "checkpoints" / "step-0000012" / "meta.json").read_text())
    assert meta["scheduled"]["augment_p"] == pytest.approx(0.6 * (1 - math.cos(math.pi * 12 * 16 / 200)) / 2)
