"""Multi-node training without SLURM: two `accelerate launch` on 127.0.0.1 as machine ranks 0 and 1.

What train.sbatch runs on each node, by hand: --num_machines 2, one CPU process per "machine",
rendezvous at 127.0.0.1. DDP must keep G and D equal on both ranks (RUN_DIR/replicas.json).
"""

import json
import os
import signal
import subprocess
import time

from helpers import ACCELERATE, ROOT, TINY, base_env, free_port

# A rank that aborts can leave the other waiting for it for 300 s; the run itself takes ~20 s.
TIMEOUT_S = 240


def machine_cmd(rank: int, port: int, run_dir) -> list[str]:
    return [ACCELERATE, "launch", "--multi_gpu", "--num_machines", "2", "--machine_rank", str(rank),
            "--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
            "--rdzv_backend", "static", "--same_network", "--mixed_precision", "no", "--dynamo_backend", "no",
            "train.py", "--config", "configs/dcgan_mnist.yaml", "--run-dir", str(run_dir), *TINY]  # fmt: skip


def run_machines(run_dir, log_dir) -> list[int]:
    """Start both machines; returns their exit codes. Stragglers are killed with their process group."""
    port = free_port()
    env = base_env(ACCELERATE_USE_CPU="1")
    procs = []
    for rank in (0, 1):
        with open(log_dir / f"machine{rank}.log", "w") as log:
            procs.append(subprocess.Popen(machine_cmd(rank, port, run_dir), cwd=ROOT, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))  # fmt: skip
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):  # one failed: the other would wait for it
                deadline = min(deadline, time.monotonic() + 30)
            time.sleep(0.5)
        return [p.poll() for p in procs]  # None: still running at the deadline
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the launcher and its workers
                proc.wait()


def test_two_machines_on_localhost(tmp_path):
    run_dir = tmp_path / "run"
    codes = run_machines(run_dir, tmp_path)
    logs = "\n".join(  # the tail of each machine's output, shown on failure
        f"--- machine {r}\n" + (tmp_path / f"machine{r}.log").read_text()[-3000:] for r in (0, 1)
    )
    assert codes == [0, 0], f"exit codes {codes} (None: still running after {TIMEOUT_S} s)\n{logs}"
    assert (run_dir / "FINISHED").read_text().strip() == "6"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-0000003", "step-0000006"]
    digests = json.loads((run_dir / "replicas.json").read_text())["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1], digests
