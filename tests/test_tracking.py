"""W&B tracking, offline: history, images, resume, disabled, failure, two processes; and the HTML report."""

import io
import json
import shutil
import subprocess

import numpy as np
import pytest
from helpers import PYTHON, TINY, base_env, run, train
from PIL import Image
from wandb_records import artifacts, history, run_info, wandb_files

from gan.run_folder import RUN_MARKER

OFFLINE = base_env(WANDB_MODE="offline", ACCELERATE_USE_CPU="1")


def scalar_rows(rows):
    return [r for r in rows if "loss/D" in r]


def test_offline_history_holds_losses_and_a_real_image(tmp_path):
    run_dir = tmp_path / "run"
    train("dcgan_mnist", run_dir, *TINY, "wandb.tags=[smoke]", env=OFFLINE)
    (wandb_file,) = wandb_files(run_dir)
    rows = history(wandb_file)
    scalars = scalar_rows(rows)
    assert [r["train/step"] for r in scalars] == [2, 4, 6]
    for key in ("loss/G", "D/real_score", "D/fake_score", "grad_norm/G", "grad_norm/D", "lr/G", "train/img_per_s",
                "train/kimg"):  # fmt: skip
        assert all(np.isfinite(r[key]) for r in scalars), key
    assert scalars[-1]["train/kimg"] == pytest.approx(6 * 16 / 1000)
    # the same scalars are in the local log
    local = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss/D"] for r in local] == pytest.approx([r["loss/D"] for r in scalars])
    images = [r for r in rows if r.get("samples/_type") == "image-file"]
    assert [r["train/step"] for r in images] == [3, 6]
    png = wandb_file.parent / "files" / images[-1]["samples/path"]
    pixels = np.asarray(Image.open(io.BytesIO(png.read_bytes())))
    assert pixels.std() > 5, "the logged W&B image is blank"
    info = run_info(wandb_file)
    assert info["id"] == (run_dir / "wandb_run_id.txt").read_text().strip()
    assert info["group"] == "dcgan_mnist"
    assert {"dcgan", "bce", "smoke"} <= set(info["tags"])
    assert info["config"]["train"]["steps"] == 6 and info["config"]["model"]["network"] == "dcgan"


def test_checkpoints_as_artifacts_each_from_training_and_the_best_from_the_evaluator(tmp_path, tmp_path_factory):
    run_dir = tmp_path / "run"
    train("dcgan_mnist", run_dir, *TINY, "wandb.log_checkpoints=all", env=OFFLINE)
    (wandb_file,) = wandb_files(run_dir)
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    logged = artifacts(wandb_file)
    assert [(a["name"], a["type"], sorted(a["aliases"])) for a in logged] == [
        (f"checkpoints-{run_id}", "model", ["latest", "step-0000003"]),
        (f"checkpoints-{run_id}", "model", ["latest", "step-0000006"])]  # fmt: skip
    assert {"G.safetensors", "D.safetensors", "G_ema.safetensors", "state.pt", "meta.json"} <= set(logged[-1]["files"])
    # the evaluator: the checkpoint best.json names (by FID, here of 16 images), alias best; the cache
    # tests/test_evaluate.py uses, so the offline Inception weights are converted once
    env = {**OFFLINE, "GAN_OFFLINE": "1", "GAN_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "gan-cache")}
    run([PYTHON, "evaluate.py", run_dir, "--metrics", "fid", "--num-samples", "16", "--num-real", "16",
         "--batch-size", "16", "--checkpoints", "latest"], env=env, check=True)  # fmt: skip
    evaluation = wandb_files(run_dir)[-1]
    (best,) = artifacts(evaluation)  # W&B adds latest to every version it logs
    assert best["name"] == f"checkpoints-{run_id}" and "best" in best["aliases"]
    step = json.loads((run_dir / "best.json").read_text())["step"]
    assert step == 6 and "meta.json" in best["files"]


def test_resume_continues_the_same_wandb_run_without_logging_a_step_twice(tmp_path):
    run_dir = tmp_path / "run"
    train("dcgan_mnist", run_dir, *TINY, "train.steps=3", env=OFFLINE)
    first_id = (run_dir / "wandb_run_id.txt").read_text()
    (run_dir / "train_log.jsonl").open("a").write(json.dumps({"step": 4, "loss/D": 0.0}) + "\n")  # logged, then killed
    train("dcgan_mnist", run_dir, *TINY, env=OFFLINE)
    assert (run_dir / "wandb_run_id.txt").read_text() == first_id
    files = wandb_files(run_dir)
    assert len(files) == 2 and {run_info(f)["id"] for f in files} == {first_id}
    steps = [r["train/step"] for f in files for r in scalar_rows(history(f))]
    assert steps == [2, 6]  # step 4 was already logged before the interruption


def test_disabled_writes_no_wandb_files(tmp_path):
    run_dir = tmp_path / "run"
    train("dcgan_mnist", run_dir, *TINY, "wandb.mode=disabled", env=base_env(WANDB_MODE=None, ACCELERATE_USE_CPU="1"))
    assert not (run_dir / "wandb").exists() and not (run_dir / "wandb_run_id.txt").exists()
    assert (run_dir / "train_log.jsonl").exists()


def test_a_failing_wandb_does_not_fail_training(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / RUN_MARKER).write_text("")  # a run folder (train.py refuses others that hold files)
    (run_dir / "wandb").write_text("not a folder: W&B cannot write its files here")
    proc = train("dcgan_mnist", run_dir, *TINY, env=OFFLINE)
    assert proc.returncode == 0
    assert proc.stderr.count("W&B init failed") == 1
    assert (run_dir / "FINISHED").exists()
    assert len((run_dir / "train_log.jsonl").read_text().splitlines()) == 3


def test_two_processes_write_exactly_one_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    train("dcgan_mnist", run_dir, *TINY, processes=2, env=OFFLINE)
    (wandb_file,) = wandb_files(run_dir)
    assert [r["train/step"] for r in scalar_rows(history(wandb_file))] == [2, 4, 6]
    assert [r["train/kimg"] for r in scalar_rows(history(wandb_file))][-1] == pytest.approx(6 * 16 * 2 / 1000)


# --------------------------------------------------------------------------- report


def find_chromium():
    found = shutil.which("chromium")
    if found:
        return found
    install = "apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium"
    proc = subprocess.run(["bash", "-c", install], capture_output=True, text=True, timeout=900)
    return shutil.which("chromium") if proc.returncode == 0 else None


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, dcgan_run):
    root = tmp_path_factory.mktemp("report")
    shutil.copytree(dcgan_run, root / "a")  # the session's run: train("dcgan_mnist", root / "a", *TINY)
    train("dcgan_mnist", root / "b", *TINY, "optim.lr_g=0.001")
    # an evaluated run: what evaluate.py appends to metrics.jsonl
    rows = [{"step": 3, "kimg": 0.048, "fid": 250.0, "recall": 0.5},
            {"step": 6, "kimg": 0.096, "fid": 180.5, "fd_mnist": 812.25, "recall": 0.125}]
    (root / "b" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_report_is_one_self_contained_page(two_runs, tmp_path):
    out = tmp_path / "report.html"
    run([PYTHON, "-m", "gan.report", two_runs / "a", two_runs / "b", "--out", out], check=True)
    page = out.read_text()
    assert "src='http" not in page and 'src="http' not in page  # everything embedded
    assert page.count("data:image/png;base64,") == 2 + 2  # losses, FID, two sample grids
    assert "optim.lr_g" in page and "0.001" in page  # the config difference
    assert "180.50 (step 6)" in page and "not evaluated" in page
    # a sweep's tuning table: the best-FID checkpoint's other numbers, in the metrics' order
    table = run([PYTHON, "-m", "gan.report", two_runs / "a", two_runs / "b", "--table"], check=True).stdout
    lines = table.strip().splitlines()
    assert lines[0] == "| run | logged step | optim.lr_g | best FID | recall | fd_mnist |"
    assert lines[2] == "| a | 6 | 0.0002 | not evaluated |  |  |"
    assert lines[3] == "| b | 6 | 0.001 | 180.50 (step 6) | 0.125 | 812.2 |"


def test_report_renders_in_headless_chromium(two_runs, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed and could not be installed with apt-get")
    out = tmp_path / "report.html"
    run([PYTHON, "-m", "gan.report", two_runs / "a", two_runs / "b", "--out", out], check=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    # Count the images that decoded to a real size, from inside the page.
    script = ("<script>window.onload=()=>{const ok=[...document.images].filter(i=>i.naturalWidth>50).length;"
              "document.title='decoded:'+ok;}</script>")  # fmt: skip
    probe = tmp_path / "probe.html"
    probe.write_text(out.read_text().replace("</body>", script + "</body>"))
    proc = subprocess.run([chromium, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert "<title>decoded:4</title>" in proc.stdout, proc.stderr[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1000,1600", out.as_uri()],
                   capture_output=True, timeout=120)  # fmt: skip
    assert np.asarray(Image.open(shot).convert("L")).std() > 10
