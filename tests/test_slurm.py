"""slurm/*.sbatch on a real SLURM cluster started on this machine (tests/slurm_cluster.py).

Two nodes (two slurmd on this machine) train one run with `accelerate launch` on each; a USR1
makes a running job checkpoint, requeue itself and resume in the same W&B run; evaluate.sbatch
waits for training through a dependency; sweep.sh runs a job array in one W&B group.
"""

import json
import re
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, TINY, base_env, run
from safetensors.torch import load_file
from slurm_cluster import SlurmCluster, install

SLURM = ROOT / "slurm"
# Evaluation settings small enough for Inception on CPU (~10 images/s here).
EVAL_ARGS = "--metrics fid --num-samples 16 --num-real 16 --batch-size 16 --checkpoints latest"


@pytest.fixture(scope="module")
def cluster():
    reason = install()
    if reason:
        pytest.skip(f"no SLURM: {reason}")
    cluster = SlurmCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def job_env(cluster, tmp_path_factory, **extra) -> dict:
    """The submitting environment: sbatch exports it into the job (SLURM_CONF, tiny-run settings)."""
    venv = Path(sys.executable).parent.parent  # the job runs this interpreter's accelerate
    cache = tmp_path_factory.getbasetemp() / "gan-cache"  # shared with the evaluator's tests
    return base_env(**cluster.env, VENV=str(venv), GAN_CACHE_DIR=str(cache), **extra)


def submitted(proc) -> dict:
    """key=value lines printed by submit.sh and sweep.sh."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(re.findall(r"^(\w+)=(\S+)$", proc.stdout, re.MULTILINE))


def job_log(run_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(run_dir.glob("slurm-*.out")))


def assert_completed(record: dict, log: str) -> None:
    assert (record["JobState"], record["ExitCode"]) == ("COMPLETED", "0:0"), f"{record}\n{log[-4000:]}"


def assert_replicas_equal(run_dir: Path, processes: int) -> None:
    digests = json.loads((run_dir / "replicas.json").read_text())["rank_digests"]
    assert len(digests) == processes and len(set(digests)) == 1, digests


def checkpoint_steps(run_dir: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in sorted((run_dir / "checkpoints").glob("step-*"))]


# --------------------------------------------------------------------------- two nodes, then evaluation


@pytest.fixture(scope="module")
def two_node_run(cluster, tmp_path_factory):
    """submit.sh: training on 2 nodes x 1 CPU process, and its evaluation with --dependency=afterok."""
    run_dir = tmp_path_factory.mktemp("slurm") / "two-nodes"
    options = ["--eval-args", EVAL_ARGS]
    env = job_env(cluster, tmp_path_factory, NODES="2", CPU_PROCS_PER_NODE="1")
    train_args = ["--config", "configs/dcgan_mnist.yaml", "--run-dir", run_dir, *TINY]
    proc = run([SLURM / "submit.sh", *options, *train_args], env=env)
    return {**submitted(proc), "run_dir": run_dir}


def test_training_on_two_nodes(cluster, two_node_run):
    run_dir = two_node_run["run_dir"]
    (record,) = cluster.wait(int(two_node_run["train_job"]), timeout_s=300)
    log = job_log(run_dir)
    assert_completed(record, log)
    assert record["NumNodes"] == "2"
    # each node expanded its own SLURM_NODEID for --machine_rank
    assert "gan: node 0 of 2" in log and "gan: node 1 of 2" in log, log[-3000:]
    assert "2 node(s) x 1 process(es)" in log
    assert (run_dir / "FINISHED").read_text().strip() == "6"
    assert checkpoint_steps(run_dir) == [3, 6]
    assert_replicas_equal(run_dir, processes=2)


def test_evaluation_after_training(cluster, two_node_run):
    run_dir = two_node_run["run_dir"]
    (train,) = cluster.wait(int(two_node_run["train_job"]), timeout_s=300)
    (evaluation,) = cluster.wait(int(two_node_run["eval_job"]), timeout_s=300)
    assert_completed(evaluation, job_log(run_dir))
    started, trained = evaluation["StartTime"], train["EndTime"]  # ISO 8601: compare as text
    assert started >= trained, (started, trained)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [6]
    assert lines[0]["num_samples"] == 16 and lines[0]["fid"] > 0


# --------------------------------------------------------------------------- preemption


def test_usr1_checkpoints_requeues_and_resumes(cluster, tmp_path_factory):
    """scancel --signal=USR1 --batch: checkpoint, exit 75, scontrol requeue, resume, finish; one W&B run."""
    run_dir = tmp_path_factory.mktemp("slurm") / "preempted"
    run_dir.mkdir()
    steps = 300  # long enough (~20 s here) for the signal to land mid-run
    overrides = [*TINY, f"train.steps={steps}", "train.checkpoint_every=1000", "train.sample_every=1000",
                 "wandb.mode=offline"]  # fmt: skip
    env = job_env(cluster, tmp_path_factory, CPU_PROCS_PER_NODE="2", WANDB_MODE=None)
    sbatch = ["sbatch", "--parsable", "--nodes=1", "--cpus-per-task=2", "--output", run_dir / "slurm-%j.out"]
    train_args = ["--config", "configs/dcgan_mnist.yaml", "--run-dir", run_dir, *overrides]
    proc = run([*sbatch, SLURM / "train.sbatch", *train_args], env=env)
    assert proc.returncode == 0, proc.stderr
    job_id = int(proc.stdout.strip().split(";")[0])

    wait_for_logged_step(cluster, job_id, run_dir / "train_log.jsonl")
    signal = run(["scancel", "--signal=USR1", "--batch", job_id], env=env)
    assert signal.returncode == 0, signal.stderr
    (record,) = cluster.wait(job_id, timeout_s=400, restarts=1)
    log = job_log(run_dir)
    assert_completed(record, log)
    assert record["Restarts"] == "1"
    # Without `trap '' USR1` in the task, the signal kills torch's elastic agent: srun reports it.
    assert "User defined signal" not in log, log[-4000:]

    stopped = re.search(r"SIGUSR1: checkpoint written at step (\d+); exiting with code 75", log)
    assert stopped, log[-4000:]
    stop_step = int(stopped.group(1))
    assert 0 < stop_step < steps
    assert "gan: requeueing job" in log
    assert f"(step {stop_step})" in re.search(r"resuming from .*", log).group(0)
    assert (run_dir / "FINISHED").read_text().strip() == str(steps)
    assert checkpoint_steps(run_dir) == [stop_step, steps]
    assert_replicas_equal(run_dir, processes=2)
    logged = [json.loads(line)["step"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert logged == list(range(2, steps + 1, 2))  # nothing lost, nothing logged twice

    # both attempts logged into the same W&B run
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    attempts = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2 and all(name.endswith(f"-{run_id}") for name in attempts), (run_id, attempts)


def wait_for_logged_step(cluster, job_id: int, train_log: Path, timeout_s: float = 180) -> None:
    """Until the running training has logged a step (so it is past start-up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if train_log.exists() and train_log.read_text().strip():
            return
        (record,) = cluster.jobs(job_id)
        assert record["JobState"] in ("PENDING", "RUNNING", "CONFIGURING"), record
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} logged no step in {timeout_s} s: {cluster.jobs(job_id)}")


# --------------------------------------------------------------------------- sweeps


def test_sweep_runs_seeds_in_one_wandb_group(cluster, tmp_path_factory):
    sweep_root = tmp_path_factory.mktemp("sweeps")
    env = job_env(cluster, tmp_path_factory, SWEEP_ROOT=str(sweep_root), CPU_PROCS_PER_NODE="1")
    sweep_args = ["--group", "seeds", "--config", "configs/dcgan_mnist.yaml", "--seeds", "0,1", *TINY]
    proc = run([SLURM / "sweep.sh", *sweep_args], env=env)
    jobs = submitted(proc)
    records = cluster.wait(int(jobs["train_job"]), timeout_s=300)
    log = job_log(sweep_root / "seeds")
    assert len(records) == 2
    for record in records:
        assert_completed(record, log)

    weights = []
    for seed in (0, 1):
        run_dir = sweep_root / "seeds" / f"dcgan_mnist-seed{seed}"
        assert (run_dir / "FINISHED").read_text().strip() == "6"
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert (config["wandb"]["group"], config["train"]["seed"]) == ("seeds", seed)
        weights.append(load_file(run_dir / "checkpoints" / "step-0000006" / "G.safetensors"))
    assert any((weights[0][k] != weights[1][k]).any() for k in weights[0]), "both seeds trained the same G"


def test_sweep_refuses_bad_arguments(tmp_path):
    """Usage errors: one line naming the problem, exit 2, before anything is submitted."""
    env = base_env(SWEEP_ROOT=str(tmp_path))
    config = ("--config", "configs/dcgan_mnist.yaml")
    cases = {
        config: "--group NAME is required",
        ("--group", "g"): "at least one --config",
        ("--group", "g", *config, "optim.betas=[0.5, 0.9]"): "contains a space",
        ("--group", "g", *config, "--seeds", "0,x"): "'x' is not a non-negative",
        ("--group", "g", *config, "configs/missing.yaml"): "neither a config file nor a key.sub=value",
    }
    for args, message in cases.items():
        proc = run([SLURM / "sweep.sh", *args], env=env)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "g").exists()
