"""Training throughput: our loop (gan.train_loop.train, in-process) against the reference loops.

Each measurement returns img/s end to end (set-up, data loading, the final checkpoint and sample
grid included) and in the steady state, over equal windows of steps after a first one of warm-up:
for our loop its log windows, for the reference loops and bench/proposals.py's step as many
steps. Steady rates are the mean over those windows and the fastest window (bench/measure.py):
for our loop per second of wall time, as its train_log.jsonl records them; for the others per
second of wall time and of the process's CPU time. Images are those of the G steps' batches, the
loop's own unit.
"""

import io
import os
import tempfile
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.measure import logged_rates, window_rates
from bench.proposals import Proposal, step_loop
from bench.reference_loops import LoopTiming, StepSpec, Variant, guide_loop, minimal_loop
from gan.config import load_config

ROOT = Path(__file__).resolve().parents[1]
# CIFAR-10 cannot be downloaded here: its presets train on the embedded digits, resized to 32 px RGB
CIFAR_STAND_IN = ["data.name=mnist5k", "data.channels=3", "data.resolution=32"]
# To size runs from a step's FLOPs before it is timed (only the run length depends on them): the
# fraction of the matmul peak a step reaches, and the Python/dispatch time of each D or G step.
ASSUMED_MFU = 0.5
STEP_OVERHEAD_S = 0.01


def preset_overrides(preset: str) -> list[str]:
    cfg = load_config(ROOT / "configs" / f"{preset}.yaml")
    return CIFAR_STAND_IN if cfg.data.name == "cifar10" else []


def preset_config(preset: str, *overrides: str):
    return load_config(ROOT / "configs" / f"{preset}.yaml", [*preset_overrides(preset), *overrides])


@dataclass(frozen=True)
class Plan:
    """How long to run one measurement: `steps` G steps, logged every `log_every` (the first
    window is the warm-up), `repeats` alternated rounds; `skip` says why it is not run."""

    steps: int
    log_every: int
    repeats: int
    est_step_s: float
    skip: str | None = None


def plan(flops_per_g_step: float, n_critic: int, peak_flop_per_s: float, target_s: float, repeats: int,
         quick: bool, heavy_s: float = float("inf")) -> Plan:  # fmt: skip
    """Enough steps to last about target_s, in four log windows (at least 8 steps).

    Above heavy_s estimated seconds per G step: 2 steps (one warm-up, one timed) and one round;
    skipped under --quick.
    """
    est = flops_per_g_step / (ASSUMED_MFU * peak_flop_per_s) + STEP_OVERHEAD_S * (n_critic + 1)
    skip = None
    if est > heavy_s:  # one timed step after one of warm-up, once
        steps, log_every, repeats = 2, 1, 1
        if quick:
            skip = f"--quick skips it: ~{est:.0f} s per G step estimated from its FLOPs"
    else:  # four windows: one of warm-up, three timed
        steps = max(8, min(400, round(target_s / est)))
        steps -= steps % 4
        log_every = steps // 4
    return Plan(steps, log_every, repeats, est, skip)


@contextmanager
def accelerate_env(env: dict[str, str] | None):
    """Environment variables read by Accelerator() (mixed precision, dynamo), set for one run.

    Accelerate keeps its state in process-wide singletons that refuse a second, different
    setting; the bench resets them around a run with other settings (Accelerate's tests do the same).
    """
    from accelerate.state import AcceleratorState, GradientState

    if not env:
        yield
        return
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        torch._dynamo.reset()


def ours(preset: str, steps: int, log_every: int, env: dict[str, str] | None = None, overrides=()) -> dict:
    """Our loop, in this process, for `steps` G steps; W&B disabled, output captured.

    Steady state: the train/img_per_s the loop logs for each of its log windows after the first
    (set-up, the first window's warm-up, and the final sample grid and checkpoint excluded).
    `env` holds Accelerate's settings for the run; `overrides` are further key=value settings.
    """
    from gan.files import read_jsonl
    from gan.run_folder import RunFolder
    from gan.train_loop import train

    cfg = preset_config(preset, f"train.steps={steps}", f"train.log_every={log_every}", "wandb.mode=disabled",
                        *overrides)  # fmt: skip
    output = io.StringIO()
    with accelerate_env(env), tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        start = time.perf_counter()
        with redirect_stdout(output), redirect_stderr(output):
            code = train(cfg, run_dir)
        seconds = time.perf_counter() - start
        windows = read_jsonl(RunFolder(run_dir).train_log)
    rates = logged_rates(windows)
    if code != 0 or not rates:
        return {"error": f"exit code {code}, {len(windows)} log windows: {output.getvalue()[-300:]}"}
    return {"img_per_s": steps * cfg.train.batch_size / seconds, **rates}


def assembled(preset: str, steps: int, log_every: int, proposal: Proposal | None = None) -> dict:
    """Our step assembled from the package's pieces (bench/proposals.py), with one proposed change.

    Steady state: from the end of the first log window to the end of the last, as for our loop.
    """
    cfg = preset_config(preset)
    output = io.StringIO()
    start = time.perf_counter()
    with redirect_stdout(output), redirect_stderr(output):
        marks = step_loop(cfg, steps, log_every, proposal or Proposal())
    seconds = time.perf_counter() - start
    return {"img_per_s": steps * cfg.train.batch_size / seconds, "warmup_s": marks[0][0] - start,
            **window_rates(marks, log_every * cfg.train.batch_size)}  # fmt: skip


def minimal(preset: str, steps: int, warmup: int, variant: Variant | None = None, overrides=()) -> dict:
    """The minimal hand-written loop over the preset's networks, batch and step (`overrides` as key=value)."""
    from gan.data import build_data
    from gan.networks import build_networks

    variant = variant or Variant()
    cfg = preset_config(preset, *overrides)
    num_classes = build_data(cfg).num_classes
    torch.manual_seed(0)
    G, D = build_networks(cfg, num_classes)
    threads = torch.get_num_threads()
    if variant.threads:
        torch.set_num_threads(variant.threads)
    try:
        timing = minimal_loop(G, D, steps, cfg.train.batch_size, cfg.optim.lr_g, tuple(cfg.optim.betas),
                              spec=StepSpec.of(cfg), variant=variant, warmup=warmup,
                              load=lambda: build_data(cfg))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
        if variant.compile:
            torch._dynamo.reset()
    return as_result(timing)


def guide(steps: int, warmup: int) -> dict:
    return as_result(guide_loop(steps, 64, warmup))


def as_result(timing: LoopTiming) -> dict:
    return {"img_per_s": timing.img_per_s, "warmup_s": timing.warmup_s, **timing.rates}
