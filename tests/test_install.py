"""Install and first run as a new user meets them: dependency ranges, console scripts, bare `train.py`."""

import re
import shutil
import sys
from pathlib import Path

import pytest
from helpers import PYTHON, ROOT, base_env, run

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

SCRIPTS = {"gan-train": "gan.train_command:main", "gan-evaluate": "gan.evaluate_command:main",
           "gan-generate": "gan.generate:main"}  # fmt: skip
BIN = Path(sys.executable).parent

# Tiny overrides for the default preset: two steps of 4-channel nets on 64 digits.
FIRST_RUN = ["train.steps=2", "train.batch_size=16", "train.checkpoint_every=2", "train.sample_every=2",
             "train.log_every=1", "data.limit=64", "model.g_channels=4", "model.d_channels=4",
             "wandb.mode=disabled"]  # fmt: skip


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", requirement).group()


def test_torch_is_a_range_not_a_pin():
    """An exact pin makes `pip install -e .` replace a cluster's or a container's own torch build."""
    requirements = {requirement_name(r): r for r in pyproject()["project"]["dependencies"]}
    for name in ("torch", "torchvision"):
        assert name in requirements, requirements
        assert "==" not in requirements[name] and ">=" in requirements[name], requirements[name]


def test_lower_bounds_cover_the_apis_used():
    """torch-fidelity's resolve_feature_layer_for_metric came in 0.4; DataLoaderConfiguration(data_seed=) in
    accelerate 1.1; fused Adam on CPU in torch 2.4."""
    requirements = {requirement_name(r): r.replace(" ", "") for r in pyproject()["project"]["dependencies"]}
    assert requirements["torch-fidelity"] == "torch-fidelity>=0.4"
    assert requirements["accelerate"] == "accelerate>=1.1"
    assert requirements["torch"] == "torch>=2.4"


def test_console_scripts_declared_and_installed():
    assert pyproject()["project"]["scripts"] == SCRIPTS
    for script in SCRIPTS:
        proc = run([BIN / script, "--help"], env=base_env())
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("usage: "), proc.stdout
        assert "Traceback" not in proc.stderr


def test_train_help_names_the_defaults():
    proc = run([PYTHON, "train.py", "--help"], check=True)
    assert proc.stdout.startswith("usage: train.py")
    assert "configs/dcgan_mnist.yaml" in proc.stdout and "runs/" in proc.stdout


def test_bare_train_trains_the_default_preset_then_resumes(tmp_path):
    """`python train.py` from any folder trains configs/dcgan_mnist.yaml into ./runs/dcgan_mnist; again resumes."""
    command = [PYTHON, ROOT / "train.py", *FIRST_RUN]
    first = run(command, env=base_env(), cwd=tmp_path, check=True)
    # the preset is named by its absolute path, as the current folder is not the repository's
    expected = f"no --config: training the default preset {ROOT / 'configs' / 'dcgan_mnist.yaml'} into runs/dcgan_mnist"
    assert expected in first.stdout, first.stdout + first.stderr
    run_dir = tmp_path / "runs" / "dcgan_mnist"
    assert (run_dir / "checkpoints" / "step-0000002" / "G.safetensors").is_file()
    assert "preset: dcgan_mnist" in (run_dir / "config.yaml").read_text()

    second = run(command, env=base_env(), cwd=tmp_path, check=True)
    assert expected in second.stdout
    assert f"resuming from {Path('runs') / 'dcgan_mnist'}" in second.stdout, second.stdout + second.stderr
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-0000002"]


def test_gan_train_with_config_defaults_to_runs_preset(tmp_path):
    """The console script with --config but no --run-dir trains into runs/<preset>."""
    proc = run([BIN / "gan-train", "--config", ROOT / "configs" / "vanilla_mnist.yaml", *FIRST_RUN],
               env=base_env(), cwd=tmp_path, check=True)  # fmt: skip
    assert "no --run-dir: training into runs/vanilla_mnist" in proc.stdout, proc.stdout
    assert (tmp_path / "runs" / "vanilla_mnist" / "checkpoints" / "step-0000002").is_dir()


def test_bare_dry_run_prints_the_default_preset(tmp_path):
    proc = run([PYTHON, ROOT / "train.py", "--dry-run", "train.steps=7"], cwd=tmp_path, check=True)
    assert "preset: dcgan_mnist" in proc.stdout and "steps: 7" in proc.stdout
    assert "ema_rampup: 0.1" in proc.stdout  # the first grids show digits, not G_ema's initial noise
    assert not (tmp_path / "runs").exists()


def test_preset_name_that_is_a_path_needs_run_dir(tmp_path):
    proc = run([PYTHON, ROOT / "train.py", "preset=../escape", "--dry-run"], cwd=tmp_path)
    assert proc.returncode == 0  # --dry-run touches no folder
    proc = run([PYTHON, ROOT / "train.py", "preset=../escape", *FIRST_RUN], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: preset '../escape'") and "--run-dir" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_installed_without_the_repository_asks_for_config(tmp_path):
    """A package copied without configs/ (a non-editable install) names the missing preset and --config."""
    shutil.copytree(ROOT / "gan", tmp_path / "site" / "gan", ignore=shutil.ignore_patterns("__pycache__"))
    main = "import sys; from gan.train_command import main; sys.exit(main())"
    env = base_env(PYTHONPATH=str(tmp_path / "site"))
    proc = run([PYTHON, "-c", main, "train.steps=2"], env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no --config given") and "pass --config" in lines[0]
    assert not (tmp_path / "runs").exists()
