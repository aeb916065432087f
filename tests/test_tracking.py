"""Tracking, offline: W&B's history, images, resume, disabled, failure, two processes, a sweep's runs;
TensorBoard's event files; and the HTML report."""

import io
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import PYTHON, ROOT, TINY, assert_user_error, base_env, evaluate_offline, run, train
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


# --------------------------------------------------------------------------- W&B sweeps


def test_a_sweep_agent_trains_each_run_into_its_own_folder_named_by_the_run_wandb_made(tmp_path, monkeypatch, capfd):
    """configs/sweeps/dcgan_mnist_lr_loss.yaml through `wandb agent`'s own command runner (Agent._command_run:
    the agent's environment, its ${args_no_hyphens}, its parameter file), offline. `wandb sweep` and the agent's
    loop ask W&B's server for the grid's next run; here the test is that server: it expands the grid and hands
    two of its runs, with run ids, to the agent."""
    from wandb import wandb_agent

    sweep = yaml.safe_load((ROOT / "configs/sweeps/dcgan_mnist_lr_loss.yaml").read_text())
    grid = list(itertools.product(*[spec["values"] for spec in sweep["parameters"].values()]))
    assert len(grid) == 9 and sweep["method"] == "grid"
    # The agent's folder: train.py and configs/ as in the repository, runs/ in tmp_path.
    for name in (sweep["program"], "configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    env = base_env(WANDB_MODE="offline", ACCELERATE_USE_CPU="1", PATH=f"{Path(PYTHON).parent}:{os.environ['PATH']}")
    for key, value in env.items():  # the agent starts each run in its own environment
        monkeypatch.setenv(key, value)
    for key in ("WANDB_DIR", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"):  # the agent sets them; undone after
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_SWEEP_ID", "swp4test")  # as `wandb agent SWEEP_ID` does (wandb_agent.run_agent)
    agent = wandb_agent.Agent(api=None, queue=None, sweep_id="swp4test")
    agent._sweep_command = sweep["command"]  # what Agent.run reads from the server's copy of the sweep file
    tiny = {key: {"value": yaml.safe_load(value)} for key, value in (t.split("=") for t in TINY)}
    runs = {"r1aaaaaa": grid[0], "r9zzzzzz": grid[-1]}  # (1e-4, bce) and (5e-4, lsgan)
    for run_id, values in runs.items():
        args = {key: {"value": value} for key, value in zip(sweep["parameters"], values, strict=True)} | tiny
        agent._command_run({"type": "run", "run_id": run_id, "program": sweep["program"], "args": args})
        assert agent._run_processes[run_id].wait(timeout=600) == 0, capfd.readouterr().err[-3000:]
    out = capfd.readouterr().out
    for run_id, (lr_g, loss) in runs.items():
        run_dir = tmp_path / "runs" / "swp4test" / run_id
        assert f"no --run-dir: training into runs/swp4test/{run_id} (W&B sweep swp4test, run {run_id})" in out
        assert (run_dir / "FINISHED").exists()
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert (config["optim"]["lr_g"], config["loss"]["name"], config["train"]["steps"]) == (lr_g, loss, 6)
        # wandb_run_id.txt names the run wandb made: its folder run-<date>-<id>, the id in its records
        (wandb_file,) = wandb_files(run_dir)
        assert wandb_file.parent.name.endswith(f"-{run_id}")
        info = run_info(wandb_file)
        assert (run_dir / "wandb_run_id.txt").read_text() == info["id"] == run_id
        assert info["sweep"] == "swp4test" and info["config"]["optim.lr_g"] == lr_g  # the sweep's parameters
        assert [r["train/step"] for r in scalar_rows(history(wandb_file))] == [2, 4, 6]
    assert not list((tmp_path / "wandb").glob("*run-*"))  # the run's files are in its folder, not in WANDB_DIR


def test_a_sweep_id_that_is_not_a_plain_name_is_one_line(tmp_path):
    env = base_env(WANDB_SWEEP_ID="../up", WANDB_RUN_ID="abc", ACCELERATE_USE_CPU="1")
    proc = run([PYTHON, ROOT / "train.py", *TINY], env=env, cwd=tmp_path)
    assert_user_error(proc, "WANDB_SWEEP_ID='../up'", "--run-dir")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- TensorBoard


def tensorboard_events(run_dir: Path, command: str = "train"):
    """What the run's TensorBoard folder of `command` (train, evaluate) holds, read with TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard" / command), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_tensorboard_gets_the_scalars_and_grids_of_training_and_the_evaluators_numbers(tmp_path, cache):
    run_dir = tmp_path / "run"
    train("dcgan_mnist", run_dir, *TINY, "tracking.backend=tensorboard")  # WANDB_MODE=disabled: W&B's switch only
    assert not (run_dir / "wandb").exists() and not (run_dir / "wandb_run_id.txt").exists()
    events = tensorboard_events(run_dir)
    local = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert set(events.Tags()["scalars"]) == {key for row in local for key in row} - {"step"}  # as W&B's panels
    for key in ("loss/D", "loss/G", "grad_norm/G", "train/kimg"):
        assert [(e.step, e.value) for e in events.Scalars(key)] == [(r["step"], pytest.approx(r[key])) for r in local]
    grids = events.Images("samples")
    assert [e.step for e in grids] == [3, 6]
    logged = np.asarray(Image.open(io.BytesIO(grids[-1].encoded_image_string)).convert("L"))
    assert np.array_equal(logged, np.asarray(Image.open(run_dir / "samples" / "step-0000006.png")))
    assert logged.std() > 5, "the logged TensorBoard image is blank"
    (hparams,) = (run_dir / "tensorboard" / "train").glob("*/hparams.yml")  # the config, through Accelerate
    assert yaml.safe_load(hparams.read_text())["train.steps"] == 6
    # the evaluator: beside training's events, against train/step
    evaluate_offline(cache, run_dir, "--metrics", "fid", "--num-samples", "16", "--num-real", "16",
                     "--batch-size", "16", "--checkpoints", "latest")  # fmt: skip
    (record,) = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    fid = tensorboard_events(run_dir, "evaluate").Scalars("eval/fid")
    assert [(e.step, e.value) for e in fid] == [(6, pytest.approx(record["fid"]))]
    assert not (run_dir / "wandb").exists()


def test_the_backend_may_change_on_resume_and_none_writes_no_tracker_files(tmp_path):
    run_dir = tmp_path / "run"
    train("dcgan_mnist", run_dir, *TINY, "train.steps=3", "tracking.backend=none", env=OFFLINE)
    assert not (run_dir / "wandb").exists() and not (run_dir / "tensorboard").exists()
    assert not (run_dir / "wandb_run_id.txt").exists() and (run_dir / "train_log.jsonl").exists()
    train("dcgan_mnist", run_dir, *TINY, "tracking.backend=tensorboard", env=OFFLINE)
    events = tensorboard_events(run_dir)
    assert [e.step for e in events.Scalars("loss/D")] == [4, 6] and [e.step for e in events.Images("samples")] == [6]
    assert not (run_dir / "wandb").exists()


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
