"""A real SLURM cluster on this machine, for the tests: munged, slurmctld and two slurmd.

Two slurmd daemons (nodes n1 and n2, 2 CPUs each, both this machine at 127.0.0.1) make a
two-node job possible on one machine. Everything lives in a private folder: its own munge
key and socket, slurm.conf (clients find it through SLURM_CONF), state, spool and logs. No
accounting, proctrack/linuxproc and task/none: nothing needs cgroups or a database.
Debian's slurm-wlm and munge are installed when missing (as root; CI runs as root).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ["slurm-wlm", "munge"]
COMMANDS = ["munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "squeue", "sinfo"]
NODES = ["n1", "n2"]
CPUS_PER_NODE = 2
# A requeued job waits cred_expire seconds before it may start again (default 120 s).
CRED_EXPIRE_S = 5
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                "PREEMPTED", "BOOT_FAIL", "DEADLINE"}  # fmt: skip


def executable(name: str) -> str | None:
    """The daemons live in /usr/sbin, which a non-login PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def missing_commands() -> list[str]:
    return [c for c in COMMANDS if executable(c) is None]


def install() -> str | None:
    """Install slurm-wlm and munge when missing; returns why SLURM is unavailable, or None."""
    if not missing_commands():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        missing = ", ".join(missing_commands())
        return f"SLURM is not installed ({missing} missing) and apt-get as root is unavailable"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-300:]}"
    missing = missing_commands()
    return f"still missing after apt-get install: {', '.join(missing)}" if missing else None


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SlurmCluster:
    """start() brings the daemons up and waits until the nodes are idle; stop() ends them by PID."""

    def __init__(self):
        # Outside pytest's 0700 tmp folders: munged wants its socket folder readable by all.
        self.root = Path(tempfile.mkdtemp(prefix="gan-slurm-"))
        self.root.chmod(0o755)
        self.conf = self.root / "slurm.conf"
        self.socket = self.root / "munge" / "munge.socket"
        self.daemons: list[tuple[str, subprocess.Popen]] = []

    @property
    def env(self) -> dict:
        """What a client command needs: SLURM_CONF (exported into jobs by sbatch too)."""
        return {"SLURM_CONF": str(self.conf)}

    def command_env(self) -> dict:
        return dict(os.environ, **self.env)

    # ------------------------------------------------------------------------- start / stop

    def start(self, timeout_s: float = 60) -> None:
        for sub in ("munge", "state", "spool", "log"):
            (self.root / sub).mkdir(mode=0o755)
        key_dir = self.root / "munge-key"
        key_dir.mkdir(mode=0o700)
        key = key_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._spawn("munged", [
            "munged", "--foreground", "--force", f"--socket={self.socket}", f"--key-file={key}",
            f"--pid-file={self.root / 'munge' / 'munged.pid'}", f"--seed-file={key_dir / 'seed'}",
            f"--log-file={self.root / 'log' / 'munged.log'}",
        ])  # fmt: skip
        self._wait_for(self.socket.exists, timeout_s, "munged to create its socket")
        self.conf.write_text(self._slurm_conf())
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._wait_for(self._controller_up, timeout_s, "slurmctld to answer")
        for node in NODES:
            self._spawn(f"slurmd {node}", ["slurmd", "-D", "-f", str(self.conf), "-N", node])
        self._wait_for(self._nodes_idle, timeout_s, "both nodes to be idle")

    def stop(self) -> None:
        """Cancel every job of this cluster, let their steps end, then stop the daemons by PID."""
        if any(name == "slurmctld" for name, _ in self.daemons):
            self.command(["scancel", "--user", str(os.getuid())])
            try:
                self._wait_for(lambda: not self.squeue(), 60, "the jobs to end")
            except TimeoutError:
                pass
        for _name, proc in reversed(self.daemons):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.daemons.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "log" / f"{name.replace(' ', '-')}.stdout", "w")
        argv = [executable(argv[0]), *argv[1:]]
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.command_env(),
                                start_new_session=True)  # fmt: skip
        self.daemons.append((name, proc))

    def _wait_for(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = [name for name, proc in self.daemons if proc.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}:\n{self.logs()}")

    def _slurm_conf(self) -> str:
        ctld_port, *node_ports = free_ports(1 + len(NODES))
        host = socket.gethostname()
        r = self.root
        lines = [
            "ClusterName=gantest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket},cred_expire={CRED_EXPIRE_S}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}/%n",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd-%n.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "MpiDefault=none",
            "ReturnToService=2",
            "SchedulerParameters=sched_interval=2,bf_interval=2",  # s between scheduling passes (60, 30)
            "KillWait=10",  # s between SIGTERM and SIGKILL when a job is cancelled or requeued
            "MinJobAge=3600",  # s a finished job stays visible to scontrol show job
        ]
        for node, port in zip(NODES, node_ports, strict=True):
            lines.append(f"NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} "
                         f"CPUs={CPUS_PER_NODE} State=UNKNOWN")  # fmt: skip
        lines.append("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
        return "\n".join(lines) + "\n"

    def _controller_up(self) -> bool:
        return self.command(["scontrol", "ping"]).returncode == 0

    def _nodes_idle(self) -> bool:
        proc = self.command(["sinfo", "--noheader", "--Node", "--format=%N %T"])
        states = dict(line.split() for line in proc.stdout.splitlines() if line.strip())
        return sorted(states) == NODES and all(s == "idle" for s in states.values())

    def logs(self, lines: int = 15) -> str:
        out = []
        for path in sorted((self.root / "log").glob("*")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    # ------------------------------------------------------------------------- jobs

    def command(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.command_env(), capture_output=True, text=True, timeout=60)

    def squeue(self) -> list[str]:
        proc = self.command(["squeue", "--noheader", "--format=%i"])
        return proc.stdout.split()

    def jobs(self, job_id: int) -> list[dict]:
        """scontrol show job as dicts (JobState, Restarts, ExitCode, StartTime, ...): one per array task."""
        proc = self.command(["scontrol", "--oneliner", "show", "job", str(job_id)])
        if proc.returncode != 0:
            raise RuntimeError(f"scontrol show job {job_id}: {proc.stderr.strip()}")
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in proc.stdout.splitlines() if line.strip()]

    def wait(self, job_id: int, timeout_s: float, restarts: int = 0) -> list[dict]:
        """Wait until every task of the job is in a final state reached after at least `restarts` requeues."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records = self.jobs(job_id)
            if all(r["JobState"] in FINAL_STATES and int(r.get("Restarts", 0)) >= restarts for r in records):
                return records
            time.sleep(1)
        records = self.jobs(job_id)
        raise TimeoutError(f"job {job_id} not finished after {timeout_s:.0f} s: {records}\n{self.logs()}")
