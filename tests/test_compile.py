"""train.compile: a compiled dcgan_mnist trains as the eager one, to fp32 rounding; the values it refuses
are one line; reduce-overhead on a CPU compiles as default, with one warning."""

import shutil

import pytest
import torch
from helpers import PYTHON, TINY, assert_user_error, run, train

from gan.files import read_jsonl
from gan.steps import compile_networks

LOSSES = ("loss/D", "loss/G", "D/real_score", "D/fake_score")


def logged_losses(run_dir) -> list[dict]:
    return [{k: r[k] for k in ("step", *LOSSES)} for r in read_jsonl(run_dir / "train_log.jsonl")]


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")),
                    reason="torch.compile on a CPU needs a C++ compiler (c++ or g++ on PATH); none here")  # fmt: skip
def test_compiled_dcgan_trains_as_eager(tmp_path):
    runs = {mode: tmp_path / mode for mode in ("none", "default")}
    for mode, run_dir in runs.items():
        train("dcgan_mnist", run_dir, *TINY, f"train.compile={mode}", "tracking.backend=none")
    eager, compiled = logged_losses(runs["none"]), logged_losses(runs["default"])
    assert [r["step"] for r in compiled] == [r["step"] for r in eager] == [2, 4, 6]
    for one, two in zip(compiled, eager, strict=True):
        for name in LOSSES:  # inductor's fused kernels round differently; Adam carries that over 6 steps
            assert one[name] == pytest.approx(two[name], rel=1e-3, abs=1e-4), (one["step"], name)


@pytest.mark.parametrize("overrides,needles", [
    (["train.compile=fast"], ["train.compile: unknown value 'fast'; choose one of: none, default, reduce-overhead"]),
    (["train.compile=default", "loss.r1_weight=1", "model.d_norm=none"],
     ["train.compile=default with loss.gp_weight, loss.r1_weight or loss.r2_weight", "train.compile=none"]),
])  # fmt: skip
def test_bad_compile_settings_are_one_line(tmp_path, overrides, needles):
    run_dir = tmp_path / "run"
    proc = run([PYTHON, "train.py", "--config", "configs/dcgan_mnist.yaml", "--run-dir", run_dir, *overrides])
    assert_user_error(proc, *needles)
    assert not run_dir.exists()


def test_reduce_overhead_on_a_cpu_compiles_as_default_with_one_warning():
    said, net = [], torch.nn.Linear(2, 1)
    assert compile_networks("reduce-overhead", [net], torch.device("cpu"), said.append) is False
    assert len(said) == 1 and said[0].startswith("warning: train.compile=reduce-overhead")
    assert net._compiled_call_impl is not None  # compiled, in place: the same module and state_dict
    assert compile_networks("none", [torch.nn.Linear(2, 1)], torch.device("cpu"), said.append) is False
    assert len(said) == 1
