"""Config errors: one clear line naming the key and the legal values, exit 2, no traceback, nothing written."""

import pytest
from helpers import PYTHON, run, snapshot

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
    (["tracking.backend=mlflow"], "tracking.backend: unknown value 'mlflow'; choose one of: wandb, tensorboard, none"),
    (["tracking.backend=tensorboard", "wandb.log_checkpoints=all"],
     "wandb.log_checkpoints=all logs W&B artifacts, and tracking.backend is tensorboard"),
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


def alias_bomb(levels: int) -> str:
    """A flow-style YAML list whose last item expands to 9**levels strings ("billion laughs" at 9)."""
    names = "abcdefghij"
    lists = ["&a [x,x,x,x,x,x,x,x,x]"]
    lists += [f"&{names[i + 1]} [" + ",".join([f"*{names[i]}"] * 9) + "]" for i in range(levels - 1)]
    return "[" + ", ".join(lists) + f", *{names[levels - 1]}]"


HOSTILE = {
    "num_samples": (
        "train.num_samples=1000000000",
        "error: train.num_samples must be in [1, 1024], got 1000000000",
    ),
    "z_dim_e_notation": (
        "model.z_dim=1e10",
        "error: model.z_dim: expected int, got 1e10 (e-notation is a float",
    ),
    "seed": ("train.seed=4294967296", "error: train.seed must be in [0, 2147483647], got 4294967296"),
    "lr_inf": ("optim.lr_g=.inf", "error: optim.lr_g: expected a finite number, got inf"),
    "deep_list": ("train.steps=" + "[" * 5000 + "]" * 5000, "levels deep"),
    "alias_bomb": (f"train.steps={alias_bomb(9)}", "error: override 'train.steps=[&a [x,x,x"),
}


@pytest.mark.parametrize("override,message", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_override_touches_nothing(tmp_path, override, message):
    """Checked before the run folder exists: exit 2, one line, and no folder, so the fixed relaunch works."""
    new = tmp_path / "new"
    proc = run([PYTHON, "train.py", "--config", "configs/dcgan_mnist.yaml", "--run-dir", new, override,
                "wandb.mode=disabled"], timeout=60)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and len(lines[0]) < 300, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not new.exists()


def test_config_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# Größe: 28 px\ntrain:\n  steps: 5\n".encode("latin-1"))
    proc = run([PYTHON, "train.py", "--config", path, "--run-dir", tmp_path / "r"])
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: config file {str(path)!r} is not UTF-8 text"), proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
