"""Screen levers at equal steps: train several variants side by side, then score their checkpoints.

python -m bench.screen --variant "NAME PRESET [KEY=VALUE ...]" [--variant ...] --every 6250 --max-steps 50000
                       [--minutes 7] [--parallel 8] [--threads 1] [--mixed-precision bf16] [--num-samples 2000]
                       --out DIR

The 10-minute protocol (bench/quality.py) fixes wall time, so the CPU decides the steps; this fixes
the steps instead, so a lever's effect per step is read apart from its cost per step, and many
variants run at once on a machine with more cores or a GPU (a pre-screen: a lever that wins here is
then timed by bench/quality.py). `slurm/sweep.sh --local` trains a grid to its train.steps; this
stops all the variants at one deadline (a lent GPU's minutes) and tabulates every checkpoint.
Each variant is `python train.py --config configs/PRESET.yaml --run-dir OUT/NAME KEY=VALUE ...` with
a checkpoint every --every steps (all kept), one process of --threads threads each, --parallel at a
time. After --minutes from the first launch, every training still running gets one SIGTERM (it
checkpoints and exits 75), so a run cut short keeps its checkpoints. Then `evaluate.py OUT/NAME
--metrics fid,fd_mnist --checkpoints S1,S2,...` scores every multiple of --every each run reached
and its newest checkpoint (the first run alone, so the real statistics are cached once, then the
rest --parallel at a time, the cores shared among them). The numbers go to OUT/screen.json and a
markdown table to stdout.
"""

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.quality import ROOT, preset_config
from gan.checkpoint import list_checkpoints
from gan.errors import EXIT_PREEMPTED, GanError
from gan.files import read_jsonl, write_atomic

METRICS = ("fid", "fd_mnist")


def parse_variant(text: str, checked_with: list[str] = ()) -> tuple[str, str, list[str]]:
    """'NAME PRESET KEY=VALUE ...' -> (name, preset, overrides), checked by loading the config with
    the overrides and then `checked_with` (the screen's own keys)."""
    parts = shlex.split(text)
    if len(parts) < 2 or not parts[0].replace("-", "").replace("_", "").isalnum():
        raise SystemExit(
            f"error: --variant {text!r}: give 'NAME PRESET [KEY=VALUE ...]', NAME in letters, digits, - and _"
        )
    name, preset, sets = parts[0], parts[1], parts[2:]
    if not (ROOT / "configs" / f"{preset}.yaml").is_file():
        raise SystemExit(f"error: --variant {name}: no preset configs/{preset}.yaml")
    try:
        preset_config(preset, [*sets, *checked_with])
    except GanError as error:
        raise SystemExit(f"error: --variant {name}: {error}") from None
    return name, preset, sets


def screen_keys(every: int, max_steps: int) -> list[str]:
    """The overrides every variant trains with, after its own."""
    return [f"train.steps={max_steps}", f"train.checkpoint_every={every}", f"train.sample_every={max_steps}",
            "train.keep_checkpoints=1000", "tracking.backend=none"]  # fmt: skip


def train_command(preset: str, run_dir: Path, sets: list[str], every: int, max_steps: int) -> list[str]:
    return [sys.executable, "train.py", "--config", f"configs/{preset}.yaml", "--run-dir", str(run_dir), *sets,
            *screen_keys(every, max_steps)]  # fmt: skip


def train_all(variants, out: Path, every: int, max_steps: int, seconds: float, parallel: int, precision: str,
              threads: int = 1):  # fmt: skip
    """Every variant trained, --parallel at a time, each stopped by SIGTERM at the deadline if still running."""
    env = dict(os.environ, TQDM_DISABLE="1", WANDB_MODE="disabled", OMP_NUM_THREADS=str(threads),
               ACCELERATE_MIXED_PRECISION=precision)  # fmt: skip
    waiting, running, codes, stopped = list(variants), {}, {}, set()
    deadline = time.monotonic() + seconds
    while waiting or running:
        while waiting and len(running) < parallel and time.monotonic() < deadline:
            name, preset, sets = waiting.pop(0)
            log = open(out / f"{name}.train.log", "w")
            cmd = train_command(preset, out / name, sets, every, max_steps)
            running[name] = (
                subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT),
                log,
            )
            print(f"[screen] train {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        if time.monotonic() >= deadline:
            for name, (proc, _) in running.items():
                # once each: a second SIGTERM can kill a run as it exits, after its checkpoint (exit -15, not 75)
                if name not in stopped:
                    proc.send_signal(signal.SIGTERM)
                    stopped.add(name)
            waiting.clear()
        for name, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                codes[name] = proc.returncode
                log.close()
                del running[name]
                print(f"[screen] {name} exited {proc.returncode}", file=sys.stderr, flush=True)
        time.sleep(1.0)
    return codes


def scored_steps(run_dir: Path, every: int) -> list[int]:
    """The checkpoints at multiples of --every, and the newest (where SIGTERM stopped the run)."""
    steps = [step for step, _ in list_checkpoints(run_dir)] if run_dir.is_dir() else []
    return sorted(step for step in steps if step % every == 0 or step == max(steps))


def score_all(names: list[str], out: Path, every: int, num_samples: int, parallel: int) -> None:
    """evaluate.py on each run's checkpoints at multiples of --every: the first alone (it caches the real
    statistics), then the rest --parallel at a time."""
    jobs = [(name, steps) for name in names if (steps := scored_steps(out / name, every))]
    threads = max(1, (os.cpu_count() or 1) // max(1, min(parallel, len(jobs))))  # the cores shared among them
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS=str(threads))
    running = []
    for i, (name, steps) in enumerate(jobs):
        cmd = [sys.executable, "evaluate.py", str(out / name), "--metrics", ",".join(METRICS),
               "--num-samples", str(num_samples), "--checkpoints", ",".join(map(str, steps))]  # fmt: skip
        log = open(out / f"{name}.score.log", "w")
        running.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        while running and (i == 0 or len(running) >= parallel or i == len(jobs) - 1):
            proc, log = running.pop(0)
            proc.wait()
            log.close()


def collect(variants, out: Path, codes: dict, num_samples: int) -> dict:
    rows = {}
    for name, preset, sets in variants:
        records = read_jsonl(out / name / "metrics.jsonl") if (out / name).is_dir() else []
        scores = {}
        for record in records:
            if record.get("num_samples") == num_samples and all(
                isinstance(record.get(m), int | float) for m in METRICS
            ):
                scores[record["step"]] = {m: record[m] for m in METRICS}
        rows[name] = {"preset": preset, "overrides": sets, "exit_code": codes.get(name),
                      "scores": {str(step): scores[step] for step in sorted(scores)}}  # fmt: skip
    return rows


def table(rows: dict) -> str:
    steps = sorted({int(s) for row in rows.values() for s in row["scores"]})
    head = "| variant | " + " | ".join(f"{s:,} FID / fd_mnist" for s in steps) + " |"
    lines = [head, "|---|" + "---|" * len(steps)]
    for name, row in rows.items():
        cells = [row["scores"].get(str(s)) for s in steps]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{c['fid']:.2f} / {c['fd_mnist']:.2f}" if c else "" for c in cells)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.screen", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True, help="'NAME PRESET [KEY=VALUE ...]'")
    parser.add_argument("--every", type=int, required=True, help="steps between the scored checkpoints")
    parser.add_argument("--max-steps", type=int, required=True, help="train.steps of every variant")
    parser.add_argument(
        "--minutes", type=float, default=7.0, help="wall time before SIGTERM to all trainings"
    )
    parser.add_argument("--parallel", type=int, default=8, help="trainings (and evaluations) at a time")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each training")
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default="no")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not 0 < args.every <= args.max_steps or min(args.parallel, args.threads) < 1:
        raise SystemExit("error: need 0 < --every <= --max-steps, and --parallel and --threads >= 1")
    variants = [parse_variant(text, screen_keys(args.every, args.max_steps)) for text in args.variant]
    if len({name for name, _, _ in variants}) != len(variants):
        raise SystemExit("error: --variant names must be distinct")
    if not 0 < args.minutes < float("inf"):
        raise SystemExit(f"error: --minutes {args.minutes}: give a positive number of minutes")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise SystemExit(f"error: --out {args.out} exists and is not an empty folder; choose another --out")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SystemExit(f"error: --out {args.out} cannot be made a folder ({error.strerror})") from None
    start = time.monotonic()
    codes = train_all(variants, args.out, args.every, args.max_steps, args.minutes * 60, args.parallel,
                      args.mixed_precision, args.threads)  # fmt: skip
    trained = time.monotonic() - start
    bad = {name: code for name, code in codes.items() if code not in (0, EXIT_PREEMPTED)}
    if bad:
        print(f"[screen] failed trainings (see OUT/NAME.train.log): {bad}", file=sys.stderr)
    score_all([name for name, _, _ in variants], args.out, args.every, args.num_samples, args.parallel)
    rows = collect(variants, args.out, codes, args.num_samples)
    record = {"train_seconds": round(trained, 1), "score_seconds": round(time.monotonic() - start - trained, 1),
              "mixed_precision": args.mixed_precision, "num_samples": args.num_samples, "variants": rows}  # fmt: skip
    write_atomic(args.out / "screen.json", json.dumps(record, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
