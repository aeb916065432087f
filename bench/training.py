"""Training throughput: our loop (gan.train_loop.train, in-process) against the reference loops.

Each measurement returns img/s end to end (set-up, data loading, the final checkpoint and sample
grid included) and in the steady state: for our loop, the img/s that the loop itself logs in
train_log.jsonl over every log window but the first; for the reference loops, the steps after
the same number of warm-up steps. Images are those of the G steps' batches, the loop's own unit.
"""

import io
import json
import os
import tempfile
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.reference_loops import StepSpec, Variant, guide_loop, minimal_loop
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
    """Enough steps to last about target_s; at least 2 (one warm-up, one timed).

    Above heavy_s estimated seconds per G step a measurement is skipped under --quick, else run once.
    """
    est = flops_per_g_step / (ASSUMED_MFU * peak_flop_per_s) + STEP_OVERHEAD_S * (n_critic + 1)
    steps = max(2, min(400, round(target_s / est)))
    if steps >= 8:
        steps -= steps % 4
        log_every = steps // 4
    else:
        log_every = 1
    skip = None
    if est > heavy_s:
        repeats = 1
        if quick:
            skip = f"--quick skips it: ~{est:.0f} s per G step estimated from its FLOPs"
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


def steady_rate(windows: list[dict], images_per_window: int) -> float | None:
    """img/s over the log windows after the first, from each window's logged train/img_per_s."""
    later = [w["train/img_per_s"] for w in windows[1:] if w.get("train/img_per_s")]
    if not later:
        return None
    return len(later) * images_per_window / sum(images_per_window / rate for rate in later)


def ours(preset: str, steps: int, log_every: int, env: dict[str, str] | None = None) -> dict:
    """Our loop, in this process, for `steps` G steps; W&B disabled, output captured."""
    from gan.train_loop import train

    cfg = preset_config(preset, f"train.steps={steps}", f"train.log_every={log_every}", "wandb.mode=disabled")
    output = io.StringIO()
    with accelerate_env(env), tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        start = time.perf_counter()
        with redirect_stdout(output), redirect_stderr(output):
            code = train(cfg, run_dir)
        seconds = time.perf_counter() - start
        log = run_dir / "train_log.jsonl"
        windows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    if code != 0:
        return {"error": f"exit code {code}: {output.getvalue()[-300:]}"}
    images = cfg.train.batch_size
    return {"img_per_s": steps * images / seconds, "steady_img_per_s": steady_rate(windows, log_every * images)}


def minimal(preset: str, steps: int, warmup: int, variant: Variant | None = None) -> dict:
    """The minimal hand-written loop over the preset's networks, batch and step."""
    variant = variant or Variant()
    from gan.data import build_data
    from gan.networks import build_networks

    cfg = preset_config(preset)
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
    return {"img_per_s": timing.img_per_s, "steady_img_per_s": timing.steady_img_per_s,
            "warmup_s": timing.warmup_s}  # fmt: skip


def guide(steps: int, warmup: int) -> dict:
    timing = guide_loop(steps, 64, warmup)
    return {"img_per_s": timing.img_per_s, "steady_img_per_s": timing.steady_img_per_s}
