"""Data-parallel throughput on the CPU: `accelerate launch` with gloo, N processes against 1.

Every configuration runs the real command (`ACCELERATE_USE_CPU=1 accelerate launch [--multi_gpu]
--num_processes P train.py ...`) at the same per-process batch, with OMP_NUM_THREADS set per
process, and reports the img/s the loop itself logs (all processes' images) over every log window
but the first. Interpreter start-up, the gloo rendezvous and the final checkpoint are outside
the windows.
"""

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.measure import logged_rates
from bench.training import ROOT
from gan.files import read_jsonl
from gan.run_folder import RunFolder

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(preset: str, processes: int, threads: int, steps: int, log_every: int) -> dict:
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS=str(threads), WANDB_MODE="disabled",
               TQDM_DISABLE="1", PYTHONUNBUFFERED="1")  # fmt: skip
    launcher = [ACCELERATE, "launch", "--num_processes", str(processes), "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    if processes > 1:
        launcher += ["--multi_gpu", "--main_process_port", str(free_port())]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [*launcher, "train.py", "--config", f"configs/{preset}.yaml", "--run-dir", str(run_dir),
               f"train.steps={steps}", f"train.log_every={log_every}", "wandb.mode=disabled"]  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        windows = read_jsonl(RunFolder(run_dir).train_log)
    if proc.returncode != 0:
        return {"error": f"exit code {proc.returncode}: {proc.stderr[-300:]}"}
    return logged_rates(windows) | {"processes": processes, "threads_per_process": threads}


def configurations(processes: int, cores: int) -> dict[str, tuple[int, int]]:
    """name -> (processes, threads per process): 1 and N processes, with 1 thread each (torchrun's
    default under accelerate launch) and with every core each (oversubscribed when N > 1)."""
    configs = {}
    for threads in sorted({1, cores}):
        for procs in (1, processes):
            configs[f"{procs} process{'es' if procs > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"] = (
                procs, threads)  # fmt: skip
    return configs
