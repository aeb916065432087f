"""Sample quality after a fixed wall-clock budget: train each MNIST preset, then score it by the evaluator.

python -m bench.quality [--minutes 10] [--presets a,b] [--seeds 0,1,2] [--num-samples 2000] [--out runs/quality]
                        [--set model.g_channels=64 ...]

For each preset and seed: `python train.py --config configs/P.yaml --run-dir OUT/P-seedS
train.seed=S` (one process, every core) runs with an unreachable train.steps (a preset whose
schedules run over train.steps keeps its horizon: schedule.kimg = its train.steps x batch); after
--minutes of wall time from its launch it gets SIGTERM, finishes its step, writes a checkpoint and
exits 75 (the preemption path). Then `python evaluate.py OUT/P-seedS --metrics fid,fd_mnist,prc --num-samples N
--checkpoints latest` scores that checkpoint (G_ema where the preset keeps one) against all 5,000
embedded digits. The name `guide` in --presets runs the guide's own loop instead
(bench/guide_run.py: same budget, same SIGTERM, same evaluate.py command), so the two are compared
in one run. `--set KEY=VALUE` (repeatable) passes a config override to every preset's training, so a
lever is timed without a preset file of its own; the protocol's own keys (steps, seed) still win.
A markdown table (the mean over the seeds and their range) goes to stdout and every run's numbers
(with the overrides) to OUT/quality.json, with the CPU (its model and vector extensions: another CPU
buys another number of steps in the same minutes) and the load average when each training started
and ended. Run it on an otherwise idle machine: the budget is wall time, so
a busy CPU means fewer steps. `--phase train` runs the timed trainings alone, back to back, and
`--phase score` evaluates them later, when the machine may be busy (by default every run OUT/quality.json
holds; --presets and --seeds choose among them); a run scored before with the same --num-samples keeps
its score (read from its metrics.jsonl).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.measure import cpu_model, simd
from gan.checkpoint import resolve_checkpoint
from gan.config import load_config
from gan.errors import EXIT_PREEMPTED, GanError
from gan.files import read_jsonl, write_atomic
from gan.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
MNIST_PRESETS = ["vanilla_mnist", "dcgan_mnist", "wgan_gp_mnist", "sngan_mnist", "cgan_mnist", "cgan_mnist_deep",
                 "r3gan_mnist", "selfcond_mnist", "selfcond_mnist_g64", "selfcond_mnist_deep"]  # fmt: skip
GUIDE = "guide"  # not a preset: the guide's own loop (bench/guide_run.py), timed and scored the same way
NUMBERS = ["fid", "fd_mnist", "precision", "recall"]  # what evaluate.py gives each run
NEVER = 10**9  # train.steps and train.checkpoint_every that the budget ends long before


def train_command(preset: str, run_dir: Path, seed: int, sets: list[str] = ()) -> list[str]:
    if preset == GUIDE:
        return [sys.executable, "-m", "bench.guide_run", "--run-dir", str(run_dir), "--seed", str(seed)]
    return [sys.executable, "train.py", "--config", f"configs/{preset}.yaml", "--run-dir", str(run_dir), *sets,
            f"train.steps={NEVER}", f"train.checkpoint_every={NEVER}", f"train.seed={seed}",
            *schedule_horizon(preset, sets), "wandb.mode=disabled"]  # fmt: skip


def preset_config(preset: str, sets: list[str] = ()):
    """The preset's config as its timed training will load it: configs/P.yaml, then the --set overrides."""
    return load_config(ROOT / "configs" / f"{preset}.yaml", sets)


def check_sets(presets: list[str], sets: list[str]) -> None:
    """Every preset loads with the overrides, or one line naming the bad one (before anything trains)."""
    for preset in presets if sets else []:
        if preset == GUIDE:
            raise SystemExit(f"error: --set does not apply to {GUIDE!r}, the guide's loop as written; time it apart")
        try:
            preset_config(preset, sets)
        except GanError as error:
            raise SystemExit(f"error: --set for {preset}: {error}") from None


def schedule_horizon(preset: str, sets: list[str] = ()) -> list[str]:
    """The override that keeps a preset's schedules on its own horizon once train.steps is unreachable:
    ramps over train.steps would otherwise stay at their start values for the whole budget."""
    cfg = preset_config(preset, sets)
    ramps = [getattr(cfg.schedule, name) for name in vars(cfg.schedule) if name != "kimg"]
    if cfg.schedule.kimg is not None or all(ramp.end is None for ramp in ramps):
        return []
    return [f"schedule.kimg={cfg.train.steps * cfg.train.batch_size / 1000:g}"]


def train_for(preset: str, run_dir: Path, seconds: float, log, threads: int | None = None,
              precision: str = "no", seed: int = 0, sets: list[str] = ()) -> dict:  # fmt: skip
    """Train until the budget is spent; returns steps done and wall time."""
    if run_dir.exists() and any(run_dir.iterdir()):
        raise SystemExit(f"error: {run_dir} exists and is not empty; choose another --out")
    cmd = train_command(preset, run_dir, seed, sets)
    env = dict(os.environ, TQDM_DISABLE="1", WANDB_MODE="disabled")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if preset == GUIDE:
        precision = "no"  # the guide's loop as written: fp32
    env["ACCELERATE_MIXED_PRECISION"] = precision  # read by Accelerator(), as `accelerate launch` sets it
    cpu, load_start = cpu_name(), os.getloadavg()[0]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        proc.wait(timeout=seconds)
        raise SystemExit(
            f"error: training {preset} exited with {proc.returncode} before the budget; see {log.name}"
        )
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
    code = proc.wait()
    wall = time.monotonic() - start
    if code != EXIT_PREEMPTED:
        raise SystemExit(f"error: training {preset} exited with {code}, not {EXIT_PREEMPTED}; see {log.name}")
    meta = resolve_checkpoint(run_dir).meta  # the newest checkpoint: the one written at SIGTERM
    return {"seed": seed, "steps": meta["step"], "kimg": meta["kimg"], "train_seconds": wall,
            "threads": threads or os.cpu_count(), "mixed_precision": precision, "cpu": cpu,
            "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)], "overrides": list(sets),
            "command": " ".join(cmd[1:])}  # fmt: skip


def cpu_name() -> str:
    """The CPU and its vector extensions: the same minutes buy a different number of steps on another CPU."""
    return f"{cpu_model()} ({', '.join(simd()) or 'no avx2'})"


def evaluate(run_dir: Path, num_samples: int, log) -> dict:
    """FID, fd_mnist, precision and recall of the newest checkpoint, by evaluate.py. A score the run
    folder's metrics.jsonl already holds for that checkpoint and sample count is read, not made again:
    a second --phase score over more seeds scores only the new runs."""
    try:
        step = resolve_checkpoint(run_dir).meta["step"]
    except GanError as error:  # the run folder lost its checkpoints, or is not a run folder
        raise SystemExit(f"error: {error}") from None
    record = stored_score(run_dir, step, num_samples)
    if record is None:
        cmd = [sys.executable, "evaluate.py", str(run_dir), "--metrics", "fid,fd_mnist,prc", "--num-samples",
               str(num_samples), "--checkpoints", "latest"]  # fmt: skip
        env = dict(os.environ, WANDB_MODE="disabled")
        code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        if code != 0:
            raise SystemExit(f"error: evaluating {run_dir} exited with {code}; see {log.name}")
        record = stored_score(run_dir, step, num_samples)
        if record is None:
            raise SystemExit(f"error: evaluating {run_dir} wrote no score of step {step}; see {log.name}")
    return {key: record[key] for key in NUMBERS}


def stored_score(run_dir: Path, step: int, num_samples: int) -> dict | None:
    """The newest record of evaluate.py's with every number of NUMBERS for that step and sample count."""
    path = RunFolder(run_dir).metrics
    try:
        records = read_jsonl(path)
    except OSError as error:  # a folder or an unreadable file in its place
        raise SystemExit(f"error: {path} cannot be read ({error.strerror}); move it away") from None
    return next((r for r in reversed(records) if r.get("step") == step and r.get("num_samples") == num_samples
                 and all(isinstance(r.get(key), int | float) for key in NUMBERS)), None)  # fmt: skip


def read_store(store: Path) -> dict:
    """OUT/quality.json's runs by preset ({} when there is none), or one line naming the file."""
    if not store.exists():
        return {}
    try:
        stored = json.loads(store.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise SystemExit(f"error: {store} cannot be read ({error}); move it away or choose another --out") from None
    if not is_record(stored):
        raise SystemExit(f"error: {store} is not bench.quality's record (preset -> list of runs); "
                         "move it away or choose another --out")  # fmt: skip
    return stored


def is_record(stored) -> bool:
    """bench.quality's record: preset -> list of runs, each with at least its seed, steps and kimg."""
    return isinstance(stored, dict) and all(
        isinstance(runs, list) and all(isinstance(run, dict) and {"seed", "steps", "kimg"} <= run.keys() for run in runs)
        for runs in stored.values())  # fmt: skip


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise SystemExit(f"error: --seeds {text!r}: give distinct non-negative integers, e.g. 0,1,2")
    return seeds


def summary(runs: list[dict], key: str, digits: int = 1) -> str:
    """The mean over the seeds, and their range when there are several."""
    values = [r[key] for r in runs]
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:,.{digits}f}"
    return f"{mean:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall time per preset")
    parser.add_argument("--presets", help=f"comma-separated preset names; {GUIDE!r} is the guide's own loop (default: "
                        "every MNIST preset; with --phase score, those OUT/quality.json holds)")  # fmt: skip
    parser.add_argument("--seeds", type=seed_list, help="comma-separated train.seed values (default 0; with --phase "
                        "score, those OUT/quality.json holds)")  # fmt: skip
    parser.add_argument("--num-samples", type=int, default=2000, help="generated images for FID")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "quality", help="folder for the runs")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for training (default: every core)")
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default="no",
                        help="training precision of the presets (bf16: autocast on the CPU)")  # fmt: skip
    parser.add_argument("--phase", choices=["all", "train", "score"], default="all",
                        help="train: the timed runs alone, back to back; score: evaluate the runs OUT/quality.json "
                             "lists (the table needs no idle machine)")  # fmt: skip
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every preset's training, as train.py takes it (repeatable)")  # fmt: skip
    args = parser.parse_args()
    if not 0 < args.minutes < float("inf"):
        raise SystemExit(f"error: --minutes {args.minutes:g}: give a positive number of minutes, e.g. 10")
    store = args.out / "quality.json"
    stored = read_store(store)  # earlier invocations' runs, kept
    args.presets, args.seeds = runs_asked_for(args, stored, store)
    check_sets(args.presets.split(","), args.sets)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SystemExit(f"error: --out {args.out} cannot be made a folder ({error.strerror})") from None
    print(f"{os.cpu_count()} CPUs; {args.minutes:g} min of training per preset and seed; FID from "
          f"{args.num_samples} samples against the 5,000 embedded digits", file=sys.stderr)  # fmt: skip
    results = {}
    for preset in args.presets.split(","):
        for seed in args.seeds:
            name = f"{preset}-seed{seed}"
            if args.phase == "score":
                result = next((r for r in stored.get(preset, []) if r["seed"] == seed), None)
                if result is None:
                    raise SystemExit(f"error: {store} has no run {name}; train it with --phase train first")
            with open(args.out / f"{name}.log", "a" if args.phase == "score" else "w") as log:
                if args.phase != "score":
                    result = train_for(preset, args.out / name, args.minutes * 60, log, args.threads,
                                       args.mixed_precision, seed, args.sets)  # fmt: skip
                if args.phase != "train":
                    result |= evaluate(args.out / name, args.num_samples, log)
                    print(f"  {name}: {result['steps']} steps, FID {result['fid']:.1f}, fd_mnist "
                          f"{result['fd_mnist']:.2f}, precision {result['precision']:.3f}, recall "
                          f"{result['recall']:.3f}", file=sys.stderr)  # fmt: skip
            results.setdefault(preset, []).append(result)
            stored[preset] = [r for r in stored.get(preset, []) if r["seed"] != seed] + [result]
            write_atomic(store, json.dumps(stored, indent=2) + "\n")  # a kill mid-write keeps the old file
    if args.phase == "train":
        return
    print(table(results, args))


def runs_asked_for(args, stored: dict, store: Path) -> tuple[str, list[int]]:
    """--presets and --seeds, or their defaults: every MNIST preset and seed 0 to train; to score, the
    presets the record holds and every seed it holds of them, so a later --phase score needs only --out."""
    if args.phase != "score":
        return args.presets or ",".join(MNIST_PRESETS), args.seeds or [0]
    presets = args.presets.split(",") if args.presets else list(stored)
    if not presets:
        raise SystemExit(f"error: {store} holds no runs to score; train them with --phase train first")
    seeds = args.seeds or sorted({run["seed"] for preset in presets for run in stored.get(preset, [])})
    return ",".join(presets), seeds or [0]


def table(results: dict, args) -> str:
    """The markdown table of the mean over the seeds, with the command that remakes it. How the runs
    trained (precision, overrides, threads) comes from their record, so --phase score prints it too."""
    seeds = ",".join(map(str, args.seeds))
    first = next(iter(results.values()))[0]
    cpus = sorted({r.get("cpu", "not recorded") for runs in results.values() for r in runs})
    lines = [f"\nmean (min-max) of seeds {seeds}; {first['threads']} torch threads; CPU: {'; '.join(cpus)}; "
             f"{args.num_samples:,} samples against the 5,000 embedded digits",  # fmt: skip
             f"\n| preset | G steps in {args.minutes:g} min | kimg | FID | fd_mnist | precision | recall |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for preset, runs in results.items():
        label = f"`{preset}`" + "".join(f" `{s}`" for s in runs[0].get("overrides", []))
        lines.append(f"| {label} | {summary(runs, 'steps', 0)} | {summary(runs, 'kimg', 0)} | {summary(runs, 'fid')} | "
                     f"{summary(runs, 'fd_mnist', 2)} | {summary(runs, 'precision', 2)} | {summary(runs, 'recall', 2)} |")  # fmt: skip
    precision = first.get("mixed_precision", "no")
    extra = f" --threads {args.threads}" if args.threads else ""
    extra += f" --mixed-precision {precision}" if precision != "no" else ""
    extra += "".join(f" --set {s}" for s in first.get("overrides", []))
    lines.append(f"\ncommand: python -m bench.quality --minutes {args.minutes:g} --presets {args.presets} --seeds {seeds} "
                 f"--num-samples {args.num_samples}{extra}")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
