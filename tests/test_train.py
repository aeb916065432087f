"""train.py through `accelerate launch`, in 1 and 2 CPU processes, on tiny settings."""

import json

import numpy as np
import pytest
import torch
import yaml
from helpers import PYTHON, TINY, base_env, run, train
from PIL import Image
from safetensors.torch import load_file


def assert_run_folder(run_dir, steps=6, every=3):
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["steps"] == steps
    assert (run_dir / "FINISHED").read_text().strip() == str(steps)
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == [f"step-{s:07d}" for s in range(every, steps + 1, every)]
    for name in names:
        files = {p.name for p in (run_dir / "checkpoints" / name).iterdir()}
        assert {"G.safetensors", "D.safetensors", "state.pt", "meta.json"} <= files
    samples = sorted(p.name for p in (run_dir / "samples").iterdir())
    assert samples == [f"step-{s:07d}.png" for s in range(every, steps + 1, every)]
    grid = np.asarray(Image.open(run_dir / "samples" / samples[-1]))
    assert grid.dtype == np.uint8 and grid.ndim == 2
    cells = grid[2:-2, 2:-2]  # inside the outer padding
    assert cells.std() > 5, "the sample grid is blank"
    logged = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(2, steps + 1, 2))
    assert all(np.isfinite(r["loss/D"]) and np.isfinite(r["loss/G"]) for r in logged)


@pytest.mark.parametrize("config", ["vanilla_mnist", "dcgan_mnist"])
def test_one_process(tmp_path, config, request):
    if config == "dcgan_mnist":  # the session's shared run is this very command: check it, not a second copy
        run_dir = request.getfixturevalue("dcgan_run")
    else:
        run_dir = tmp_path / "run"
        train(config, run_dir, *TINY, launcher=True)
    assert_run_folder(run_dir)


# dcgan_mnist with LeCam: its anchors must be averaged over the processes to stay equal (the digest holds them)
@pytest.mark.parametrize(("config", "extra"), [("vanilla_mnist", []), ("dcgan_mnist", ["loss.lecam_weight=0.3"])])
def test_two_processes_stay_in_sync(tmp_path, config, extra):
    run_dir = tmp_path / "run"
    train(config, run_dir, *TINY, *extra, processes=2)
    assert_run_folder(run_dir)
    digests = json.loads((run_dir / "replicas.json").read_text())["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    rng_files = sorted(p.name for p in (run_dir / "checkpoints" / "step-0000006").glob("rng-rank*.pt"))
    assert rng_files == ["rng-rank0.pt", "rng-rank1.pt"]


def final_weights(run_dir, step):
    folder = run_dir / "checkpoints" / f"step-{step:07d}"
    return {name: load_file(folder / f"{name}.safetensors") for name in ("G", "D", "G_ema")}


# On a GPU the noise comes from the device's generator, which checkpoints keep too. cuDNN's backward
# kernels add in no fixed order, so GPU runs agree to rounding that grows over the steps, not to 1e-6;
# a resume that lost the GPU's RNG state would differ by the noise itself, orders of magnitude more.
DEVICES = [pytest.param("cpu", 1e-6, id="cpu"),
           pytest.param("cuda", 1e-3, id="cuda", marks=pytest.mark.skipif(
               not torch.cuda.is_available(), reason="exact resume on a GPU needs a CUDA device; this machine has none"))]  # fmt: skip


@pytest.mark.parametrize(("device", "tolerance"), DEVICES)
def test_stop_and_resume_equals_no_interruption(tmp_path, device, tolerance):
    # 512 images / 16 = 32 batches per epoch: 40 steps cross an epoch boundary after the resume.
    # LeCam's anchors are training state too: a resume that lost them would regularise with others
    settings = [*TINY, "train.steps=40", "train.checkpoint_every=12", "train.sample_every=20", "train.log_every=4",
                "train.tf32=false", "loss.lecam_weight=0.3"]  # fmt: skip
    env = base_env(ACCELERATE_USE_CPU="1" if device == "cpu" else None)
    train("dcgan_mnist", tmp_path / "straight", *settings, env=env)
    train("dcgan_mnist", tmp_path / "stopped", *settings, "train.steps=12", env=env)
    resumed = train("dcgan_mnist", tmp_path / "stopped", *settings, env=env)
    assert "resuming from" in resumed.stdout + resumed.stderr
    if device == "cuda":
        assert "cuda" in torch.load(tmp_path / "stopped" / "checkpoints" / "step-0000012" / "rng-rank0.pt")
    a, b = final_weights(tmp_path / "straight", 40), final_weights(tmp_path / "stopped", 40)
    for name in a:
        for key in a[name]:
            diff = (a[name][key].double() - b[name][key].double()).abs().max().item()
            assert diff <= tolerance, f"{name}.{key} differs by {diff}"
    # the resumed run did not log the steps before its checkpoint twice
    steps = [json.loads(x)["step"] for x in (tmp_path / "stopped" / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_generate_writes_the_images_asked_for(dcgan_run, tmp_path):
    out = tmp_path / "pngs"
    run([PYTHON, "-m", "gan.generate", dcgan_run, "--num", "7", "--out", out], check=True)
    files = sorted(out.glob("*.png"))
    assert len(files) == 7
    assert Image.open(files[0]).size == (28, 28)
    grid = tmp_path / "grid.png"
    run([PYTHON, "-m", "gan.generate", dcgan_run / "checkpoints" / "step-0000003", "--num", "9", "--out", grid],
        check=True)  # fmt: skip
    assert Image.open(grid).size == (3 * 30 + 2, 3 * 30 + 2)


def test_image_folder_trains_and_reports_unreadable_files(tmp_path):
    folder = tmp_path / "images"
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (folder / label / "nested").mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / label / "nested" / f"{i}.png")
    (folder / "cats" / "broken.png").write_bytes(b"not a png")
    proc = train("dcgan_mnist", tmp_path / "run", *TINY, "data.name=image_folder", f"data.root={folder}",
                 "data.resolution=32", "data.channels=3")  # fmt: skip
    assert "skipped 1 unreadable image file(s)" in proc.stdout + proc.stderr
    grid = Image.open(tmp_path / "run" / "samples" / "step-0000006.png")
    assert grid.mode == "RGB"


def test_torchvision_data_offline_fails_with_one_clear_line(tmp_path):
    proc = run([PYTHON, "train.py", "--config", "configs/dcgan_mnist.yaml", "--run-dir", tmp_path / "run",
                "data.name=fashion_mnist", f"data.root={tmp_path / 'data'}", "train.steps=1"], timeout=300)  # fmt: skip
    if proc.returncode == 0:
        pytest.skip("this machine has a network: Fashion-MNIST downloaded")
    assert proc.returncode == 2
    assert "could not download FashionMNIST" in proc.stderr and "mnist5k" in proc.stderr
    assert "image_folder" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
