"""slurm/sweep.sh --local: a sweep's grid trained and evaluated on this machine, without SLURM."""

import json
import signal
import subprocess
import time

from helpers import ROOT, TINY, base_env

EVAL_ARGS = "--metrics kid --num-samples 16 --num-real 16 --kid-subset-size 8 --batch-size 16"


def test_a_local_sweep_trains_and_evaluates_each_task_and_names_the_failed_ones(tmp_path, cache):
    # 2 data sets x 2 seeds, two at a time: image_folder's data.root is missing, so its tasks fail at
    # run time (the settings themselves pass the sweep's check) and the others must not be affected.
    env = base_env(SWEEP_ROOT=str(tmp_path), GAN_CACHE_DIR=str(cache), GAN_OFFLINE="1", ACCELERATE_USE_CPU="1")
    proc = subprocess.run(
        ["bash", "slurm/sweep.sh", "--local", "--group", "g", "--config", "configs/dcgan_mnist.yaml",
         "--seeds", "0,1", "--set", "data.name=mnist5k,image_folder", "--max-parallel", "2", "--evaluate",
         "--eval-args", EVAL_ARGS, *TINY, f"data.root={tmp_path / 'missing'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: 2 of 4 task(s) failed (listed above)", proc.stderr
    lines = (tmp_path / "g" / "tasks.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == [
        f"{tmp_path}/g/dcgan_mnist-name={data}-seed{seed}" for data in ("mnist5k", "image_folder") for seed in (0, 1)
    ]
    for i, line in enumerate(lines):
        run_dir, log = tmp_path / "g" / line.split()[0].rsplit("/", 1)[1], tmp_path / "g" / f"local-{i}.out"
        if "image_folder" in line:
            assert f"task {i} {line.split()[0]}: failed (exit 2), see {log}" in proc.stdout
            assert "data.root=" in log.read_text() and "is not a folder" in log.read_text()
            continue
        assert f"task {i} {line.split()[0]}: done" in proc.stdout
        assert (run_dir / "FINISHED").exists()
        records = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [3, 6] and all(r["kid_mean"] is not None for r in records)
        config = (run_dir / "config.yaml").read_text()
        assert f"seed: {i % 2}" in config and "group: g" in config


def test_sigterm_stops_a_local_sweep_after_its_trainings_checkpoint(tmp_path):
    env = base_env(SWEEP_ROOT=str(tmp_path), GAN_OFFLINE="1", ACCELERATE_USE_CPU="1")
    sweep = subprocess.Popen(
        ["bash", "slurm/sweep.sh", "--local", "--group", "g", "--config", "configs/dcgan_mnist.yaml", "--seeds", "0",
         *TINY, "train.steps=100000"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run_dir = tmp_path / "g" / "dcgan_mnist-seed0"
    try:
        deadline = time.monotonic() + 300
        while not list((run_dir / "checkpoints").glob("step-*")) and time.monotonic() < deadline:
            time.sleep(0.5)  # training has started once its first checkpoint is there
        sweep.send_signal(signal.SIGTERM)
        out, err = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 130, out + err
    assert f"task 0 {run_dir}: stopped at a checkpoint (exit 75)" in out
    assert "error: stopped; the running tasks checkpointed" in err
    assert "SIGTERM: checkpoint written at step" in (tmp_path / "g" / "local-0.out").read_text()
    assert not (run_dir / "FINISHED").exists()
