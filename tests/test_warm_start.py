"""train.init_from: a new run starts from another run's weights, with fresh optimizers, at step 0."""

import shutil

import torch
from helpers import TINY, train
from safetensors.torch import load_file


def weights(run_dir, step, name):
    return load_file(run_dir / "checkpoints" / f"step-{step:07d}" / f"{name}.safetensors")


def max_change(a: dict, b: dict) -> float:
    """The largest difference between two networks' parameters (BatchNorm's running statistics left out)."""
    return max((a[k] - b[k]).abs().max().item() for k in a if "running_" not in k and "num_batches" not in k)


def test_init_from_starts_from_the_source_weights_with_fresh_optimizers(tmp_path, dcgan_run):
    source = tmp_path / "source"
    shutil.copytree(dcgan_run, source)
    # lr 1e-9: three Adam steps move a weight by at most 3e-9, so the new run's first checkpoint
    # shows where it started; another seed, so that a cold start begins elsewhere
    settings = [*TINY, "train.steps=3", "train.seed=1", "optim.lr_g=1e-9", "optim.lr_d=1e-9"]
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    proc = train("dcgan_mnist", warm, *settings, f"train.init_from={source}")
    assert f"start from {source / 'checkpoints' / 'step-0000006'}" in proc.stdout
    train("dcgan_mnist", cold, *settings)
    for name in ("G", "D", "G_ema"):
        source_weights = weights(source, 6, name)
        assert max_change(weights(warm, 3, name), source_weights) < 1e-6, name
        assert max_change(weights(cold, 3, name), source_weights) > 1e-2, name
    state = torch.load(warm / "checkpoints" / "step-0000003" / "state.pt", weights_only=True)
    assert state["step"] == 3
    assert {float(s["step"]) for s in state["opt_G"]["state"].values()} == {3.0}  # fresh: not 6 + 3

    # a resume continues from the run's own checkpoint: the source is no longer read
    shutil.rmtree(source)
    proc = train("dcgan_mnist", warm, *settings, "train.steps=6", f"train.init_from={source}")
    assert "resuming from" in proc.stdout and "start from" not in proc.stdout
    assert (warm / "FINISHED").read_text().strip() == "6"
