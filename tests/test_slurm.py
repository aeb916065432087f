"""slurm/*.sbatch on a real SLURM cluster started on this machine (tests/slurm_cluster.py).

Two nodes (two slurmd on this machine) train one run with `accelerate launch` on each; a USR1
makes a running job checkpoint, requeue itself and resume in the same W&B run; evaluate.sbatch
waits for training through a dependency; sweep.sh runs a job array in one W&B group, a grid of
--set values, and never overwrites a queued sweep; train.sbatch passes ACCELERATE_CONFIG_FILE to
`accelerate launch` and says when a job trains on CPU.
"""

import itertools
import json
import re
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, TINY, assert_user_error, base_env, run, snapshot, train
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
    # no accelerate config file: train.sbatch passes accelerate's defaults, which silences its warning
    assert "were not passed to `accelerate launch`" not in log, log[-3000:]
    assert "training on CPU, 1 process(es) per node" in log
    assert (run_dir / "FINISHED").read_text().strip() == "6"
    assert checkpoint_steps(run_dir) == [3, 6]
    assert_replicas_equal(run_dir, processes=2)


def test_evaluation_after_training(cluster, two_node_run):
    run_dir = two_node_run["run_dir"]
    (train,) = cluster.wait(int(two_node_run["train_job"]), timeout_s=300)
    (evaluation,) = cluster.wait(int(two_node_run["eval_job"]), timeout_s=300)
    assert_completed(evaluation, job_log(run_dir))
    assert "has no GPU (SLURM_GPUS_ON_NODE is unset): evaluating on CPU" in job_log(run_dir)
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


def test_sweep_grid_of_set_values_and_no_overwrite(cluster, tmp_path_factory):
    """configs x --set values x seeds, one array task each; a second sweep of the group is refused.

    The arrays are submitted held (sbatch --hold): what is checked is what was queued.
    """
    sweep_root = tmp_path_factory.mktemp("sweeps")
    env = job_env(cluster, tmp_path_factory, SWEEP_ROOT=str(sweep_root), SBATCH_ARGS="--hold")
    configs, lrs, betas, seeds = ["dcgan_mnist", "sngan_mnist"], ["1e-4", "2e-4"], ["[0.5,0.999]", "[0.0,0.99]"], [0, 1]  # fmt: skip
    sweep_args = ["--group", "grid", *("--config", "configs/dcgan_mnist.yaml", "--config", "configs/sngan_mnist.yaml"),
                  "--set", f"optim.lr_g={','.join(lrs)}", "--set", f"optim.betas={','.join(betas)}",
                  "--seeds", ",".join(map(str, seeds)), "train.steps=6"]  # fmt: skip
    jobs = submitted(run([SLURM / "sweep.sh", *sweep_args], env=env))
    try:
        tasks = sweep_root / "grid" / "tasks.txt"
        assert jobs["tasks"] == str(tasks)
        expected = []
        for config, lr, beta, seed in itertools.product(configs, lrs, betas, seeds):
            name = f"{config}-lr_g={lr}-betas={beta.strip('[]').replace(',', '_')}-seed{seed}"
            expected.append(f"{sweep_root / 'grid' / name} --config configs/{config}.yaml train.seed={seed} "
                            f"wandb.group=grid train.steps=6 optim.lr_g={lr} optim.betas={beta}")  # fmt: skip
        assert tasks.read_text().splitlines() == expected
        (record,) = cluster.jobs(int(jobs["train_job"]))  # a pending array is one record
        assert (record["ArrayTaskId"], record["JobState"]) == ("0-15", "PENDING"), record

        # The same --group again, with other values: refused before anything is written or submitted.
        before, queued = snapshot(sweep_root), cluster.squeue()
        again = ["--group", "grid", "--config", "configs/dcgan_mnist.yaml", "--set", "optim.lr_g=5e-4"]
        proc = run([SLURM / "sweep.sh", *again], env=env)
        assert_user_error(proc, f"{tasks} exists", "choose another --group")
        assert snapshot(sweep_root) == before and cluster.squeue() == queued
    finally:
        cluster.command(["scancel", jobs["train_job"]])


@pytest.fixture(scope="module")
def bf16_config(tmp_path_factory) -> Path:
    """An `accelerate config` file whose setting shows in the weights: bf16 mixed precision."""
    path = tmp_path_factory.mktemp("accelerate") / "bf16.yaml"
    path.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nmixed_precision: bf16\n"
                    "num_machines: 1\nnum_processes: 1\nuse_cpu: false\n")  # fmt: skip
    return path


def launch_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("gan: on each node: accelerate launch")]


def final_G(run_dir: Path) -> dict:
    return load_file(run_dir / "checkpoints" / "step-0000006" / "G.safetensors")


def test_accelerate_config_file_and_mixed_precision(cluster, tmp_path_factory, bf16_config):
    """ACCELERATE_CONFIG_FILE reaches `accelerate launch`: its bf16 trains a sweep's --set grid when
    MIXED_PRECISION is unset; MIXED_PRECISION=no overrides it (weights equal to a plain fp32 run)."""
    sweep_root = tmp_path_factory.mktemp("sweeps")
    env = job_env(cluster, tmp_path_factory, SWEEP_ROOT=str(sweep_root), CPU_PROCS_PER_NODE="1",
                  ACCELERATE_CONFIG_FILE=str(bf16_config), MIXED_PRECISION=None, GPUS_PER_NODE=None)  # fmt: skip
    sweep_args = ["--group", "precision", "--config", "configs/dcgan_mnist.yaml", "--set", "optim.lr_g=1e-4,3e-4",
                  *TINY]  # fmt: skip
    proc = run([SLURM / "sweep.sh", *sweep_args], env=env)
    sweep = submitted(proc)
    assert "warning: GPUS_PER_NODE is unset: the training gets no GPUs and runs on CPU" in proc.stderr

    # the same training as the sweep's lr_g=3e-4 task, with MIXED_PRECISION=no
    fp32_dir = tmp_path_factory.mktemp("slurm") / "fp32"
    fp32_dir.mkdir()
    args = ["--config", "configs/dcgan_mnist.yaml", "--run-dir", fp32_dir, "wandb.group=precision", *TINY,
            "optim.lr_g=3e-4"]  # fmt: skip
    sbatch = ["sbatch", "--parsable", "--output", fp32_dir / "slurm-%j.out", SLURM / "train.sbatch", *args]
    proc = run(sbatch, env={**env, "MIXED_PRECISION": "no"})
    assert proc.returncode == 0, proc.stderr
    fp32_job = int(proc.stdout.strip().split(";")[0])
    reference = tmp_path_factory.mktemp("runs") / "fp32"  # meanwhile, here: `python train.py` in fp32
    train("dcgan_mnist", reference, *args[4:])

    records = cluster.wait(int(sweep["train_job"]), timeout_s=300)
    log = job_log(sweep_root / "precision")  # read once the jobs have ended
    for record in records:
        assert_completed(record, log)
    runs = {lr: sweep_root / "precision" / f"dcgan_mnist-lr_g={lr}" for lr in ("1e-4", "3e-4")}
    for lr, run_dir in runs.items():
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["optim"]["lr_g"] == float(lr)
    lines = launch_lines(log)
    assert len(lines) == 2 and all(f"--config_file {bf16_config} " in line for line in lines), lines
    assert not any("--mixed_precision" in line or "--dynamo_backend" in line for line in lines), lines
    assert log.count("has no GPUs (SLURM_GPUS_ON_NODE is unset): training on CPU") == 2, log[-3000:]

    (record,) = cluster.wait(fp32_job, timeout_s=300)
    fp32_log = job_log(fp32_dir)
    assert_completed(record, fp32_log)
    (line,) = launch_lines(fp32_log)
    assert f"--config_file {bf16_config} --mixed_precision no --machine_rank" in line, line

    fp32, bf16, ref = final_G(fp32_dir), final_G(runs["3e-4"]), final_G(reference)
    assert all((fp32[k] == ref[k]).all() for k in ref), "MIXED_PRECISION=no did not train in fp32"
    assert any((bf16[k] != ref[k]).any() for k in ref), "the config file's bf16 was not used"


def test_train_sbatch_refuses_bad_mixed_precision(cluster, tmp_path_factory):
    """A bad MIXED_PRECISION given to plain sbatch: the job fails at once with one line in its log."""
    run_dir = tmp_path_factory.mktemp("slurm") / "bad-precision"
    run_dir.mkdir()
    env = job_env(cluster, tmp_path_factory, MIXED_PRECISION="fp32")
    sbatch = ["sbatch", "--parsable", "--output", run_dir / "slurm-%j.out", SLURM / "train.sbatch",
              "--config", "configs/dcgan_mnist.yaml", "--run-dir", run_dir, *TINY]  # fmt: skip
    proc = run(sbatch, env=env)
    assert proc.returncode == 0, proc.stderr
    (record,) = cluster.wait(int(proc.stdout.strip().split(";")[0]), timeout_s=120)
    log = job_log(run_dir)
    assert (record["JobState"], record["ExitCode"]) == ("FAILED", "2:0"), (record, log)
    assert log.strip() == "error: MIXED_PRECISION='fp32': use no, fp16, bf16 or fp8 (or leave it unset)", log
    assert [p.name for p in run_dir.iterdir()] == [f"slurm-{record['JobId']}.out"]


def test_sweep_refuses_bad_arguments(tmp_path):
    """Usage errors: one line naming the problem, exit 2, before anything is written or submitted."""
    unset = dict.fromkeys(["MIXED_PRECISION", "ACCELERATE_CONFIG_FILE", "GPUS_PER_NODE"])
    venv = Path(sys.executable).parent.parent  # sweep.sh checks the tasks' settings with its Python
    env = base_env(SWEEP_ROOT=str(tmp_path), VENV=str(venv), **unset)
    config = ("--config", "configs/dcgan_mnist.yaml")
    cases = {
        config: "--group NAME is required",
        ("--group", "g"): "at least one --config",
        ("--group", "g", *config, "optim.betas=[0.5, 0.9]"): "contains a space",
        ("--group", "g", *config, "--seeds", "0,x"): "'x' is not a non-negative",
        ("--group", "g", *config, "configs/missing.yaml"): "neither a config file nor a key.sub=value",
        ("--group", "g", *config, "--set", "optim.lr_g=1e-4, 2e-4"): "contains a space",
        ("--group", "g", *config, "--set", "optim.lr_g"): "expected KEY=V1,V2,...",
        ("--group", "g", *config, "--set", "optim.lr_g=1e-4,"): "an empty value",
        ("--group", "g", *config, "--set", "optim.lr_g=1e-4", "--set", "optim.lr_g=2e-4"): "given twice",
        ("--group", "g", *config, "--set", "optim.lr_gg=1e-4,2e-4"): "unknown config key 'optim.lr_gg'",
        ("--group", "g", *config, "--set", "optim.lr_g=1e-4,fast"): "optim.lr_g: expected float, got 'fast'",
        ("--group", "g", *config, "--seeds", "0,0"): "two tasks would share the run folder",
        ("--group", "g", *config, *config): "two tasks would share the run folder",
        ("--group", "g", *config, "--max-parallel", "0"): "--max-parallel '0'",
        ("--group", "g", *config, "--max-parallel", "9" * 20): "a number of tasks, 1 to 999999",
    }
    for args, message in cases.items():
        assert_user_error(run([SLURM / "sweep.sh", *args], env=env), message)
    assert not (tmp_path / "g").exists()

    environment = {
        "MIXED_PRECISION": ("fp32", "MIXED_PRECISION='fp32': use no, fp16, bf16 or fp8"),
        "ACCELERATE_CONFIG_FILE": ("missing.yaml", "ACCELERATE_CONFIG_FILE='missing.yaml': no such file"),
        "GPUS_PER_NODE": ("four", "GPUS_PER_NODE='four': a number of GPUs"),
    }
    for variable, (value, message) in environment.items():
        for script in ("sweep.sh", "submit.sh"):
            run_dir = tmp_path / f"run-{script}"
            args = ["--group", "g", *config] if script == "sweep.sh" else [*config, "--run-dir", run_dir]
            assert_user_error(run([SLURM / script, *args], env={**env, variable: value}), message)
            assert not run_dir.exists()
    assert not (tmp_path / "g").exists()

    # A run folder of the group that exists (its tasks file removed, say) is never given a new sweep's task.
    old_run = tmp_path / "old" / "dcgan_mnist-seed1"
    old_run.mkdir(parents=True)
    proc = run([SLURM / "sweep.sh", "--group", "old", *config, "--seeds", "0,1"], env=env)
    assert_user_error(proc, f"{old_run} exists", "choose another --group")
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["dcgan_mnist-seed1"]
