"""Config errors: one clear line naming the key and the legal values, exit 2, no traceback, nothing written."""

import pytest
from conftest import PYTHON, run, snapshot

CASES = [
    (["train.stepz=3"], "train.stepz"),
    (["train.steps=abc"], "train.steps: expected int"),
    (["train.steps=1.5"], "train.steps: expected int"),
    (["model.network=resnet9000"], "model.network: unknown network 'resnet9000'; choose one of: dcgan, mlp"),
    (["loss.name=nope"], "loss.name: unknown loss 'nope'; choose one of: bce"),
    (["data.name=imagenet"], "data.name: unknown data set 'imagenet'; choose one of:"),
    (["train.steps=-5"], "train.steps must be > 0"),
    (["train.batch_size=0"], "train.batch_size must be > 0"),
    (["optim.lr_g=0"], "optim.lr_g must be > 0"),
    (["no_equals_sign"], "is not of the form key.sub=value"),
]


@pytest.fixture
def existing_run(dcgan_run):
    return dcgan_run, snapshot(dcgan_run)


@pytest.mark.parametrize("overrides,message", CASES, ids=[c[0][0] for c in CASES])
def test_bad_override(existing_run, overrides, message):
    run_dir, before = existing_run
    proc = run([PYTHON, "train.py", "--config", "configs/dcgan_mnist.yaml", "--run-dir", run_dir, *overrides])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert snapshot(run_dir) == before


def test_missing_config_file(tmp_path):
    proc = run([PYTHON, "train.py", "--config", "configs/nope.yaml", "--run-dir", tmp_path / "r"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: config file 'configs/nope.yaml' does not exist"
    assert not (tmp_path / "r").exists()


def test_dry_run_prints_the_resolved_config():
    proc = run([PYTHON, "train.py", "--config", "configs/vanilla_mnist.yaml", "--dry-run", "train.steps=7"])
    assert proc.returncode == 0
    assert "steps: 7" in proc.stdout and "network: mlp" in proc.stdout and "z_dim: 784" in proc.stdout
