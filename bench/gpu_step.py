"""The GPU step study (issue #19): our loop before and after the one-call step, eager and compiled.

python -m bench.gpu --step --before DIR [--out bench/gpu_step_results.json] [--budget-s 400] [--quick]
                     [--cells CODE:PRESET:BATCH:PRECISION:MODE[:profile],...]
python -m bench.gpu_step [RESULTS.json]   # the results as a Markdown table (docs/performance.md)

DIR holds the code of the commit before the one-call step (`git archive 69acbe2 | tar -x -C DIR`).
Each cell is one training run of dcgan_cifar10 or sngan_cifar10 (bench.training.ours, W&B off,
the embedded digits at 32 px RGB, data on the GPU) in a fresh Python process, with the code of this
tree ("after") or of DIR ("before"): no dynamo or Accelerate state crosses cells (inductor's cache on
disk may), and a cell that fails is recorded and the study goes on. "after" compiles with `train.compile=MODE`;
"before" had no such key and runs eager only. Cells run in order of priority and none starts after
the budget, so a short lease measures the issue's targets first.

Profiled cells run the same training under torch.profiler (CPU and CUDA activity) and read the
exported trace: between the end of the optimizer step a quarter of the way in and the end of the
last one, the GPU busy share is the union of kernel, memcpy and memset intervals over that wall
time, and the host share is the rest. The profiler slows the host, so these cells give shares, not
img/s.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.training import ROOT
from gan.files import write_atomic

STEPS = {"dcgan_cifar10": (400, 100), "sngan_cifar10": (80, 20)}  # G steps, log window (the first is warm-up)
PROFILED_STEPS = {"dcgan_cifar10": (120, 30), "sngan_cifar10": (24, 6)}
CELL_TIMEOUT_S = 240.0
GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


@dataclass(frozen=True)
class Cell:
    code: str  # "after" (this tree) or "before" (--before DIR)
    preset: str
    batch: int
    precision: str  # "bf16" or "fp32-tf32"
    mode: str = "none"  # train.compile
    profile: bool = False


def plan() -> list[Cell]:
    """Cells in order of priority: dcgan_cifar10's targets (batch 64 img/s, batch 256 GPU busy share)
    first, then the compile modes, sngan_cifar10, and fp32 with TF32."""
    cells = []
    for batch in (64, 256):
        cells += [Cell("after", "dcgan_cifar10", batch, "bf16"), Cell("before", "dcgan_cifar10", batch, "bf16"),
                  Cell("after", "dcgan_cifar10", batch, "bf16", "reduce-overhead")]  # fmt: skip
    cells += [Cell("after", "dcgan_cifar10", 256, "bf16", mode, profile=True) for mode in ("none", "reduce-overhead")]
    cells += [Cell("before", "dcgan_cifar10", 256, "bf16", profile=True)]
    cells += [Cell("after", "dcgan_cifar10", batch, "bf16", "default") for batch in (64, 256)]
    for batch in (64, 256):
        cells += [Cell("after", "sngan_cifar10", batch, "bf16"), Cell("before", "sngan_cifar10", batch, "bf16"),
                  Cell("after", "sngan_cifar10", batch, "bf16", "reduce-overhead")]  # fmt: skip
    cells += [Cell("after", "dcgan_cifar10", 64, "bf16", mode, profile=True) for mode in ("none", "reduce-overhead")]
    cells += [Cell("after", "sngan_cifar10", batch, "bf16", "default") for batch in (64, 256)]
    cells += [Cell("after", "dcgan_cifar10", batch, "fp32-tf32", mode) for batch in (64, 256)
              for mode in ("none", "reduce-overhead")]  # fmt: skip
    return cells


# Runs in a fresh process inside the tree under test (its bench.training and gan); prints one JSON line.
CELL_SCRIPT = r"""
import json, sys
import torch
from bench.training import ours
spec = json.loads(sys.argv[1])
def run():
    return ours(spec["preset"], spec["steps"], spec["window"], env=spec["env"], overrides=spec["overrides"])
if spec["trace"]:
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        result = run()
    prof.export_chrome_trace(spec["trace"])
    top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:20]
    result["host_top"] = [(e.key, e.self_cpu_time_total / 1e3, e.count) for e in top]  # name, self CPU ms, calls
else:
    result = run()
result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
print("CELL " + json.dumps(result))
"""


def run_cell(cell: Cell, before: Path, quick: bool, timeout_s: float, n_critic: int) -> dict:
    steps, window = (8, 2) if quick else (PROFILED_STEPS if cell.profile else STEPS)[cell.preset]
    tree = ROOT if cell.code == "after" else before
    overrides = [f"train.batch_size={cell.batch}", "train.tf32=true"]
    if cell.code == "after":
        overrides.append(f"train.compile={cell.mode}")
    env = {"ACCELERATE_MIXED_PRECISION": "no" if cell.precision == "fp32-tf32" else cell.precision,
           "ACCELERATE_DYNAMO_BACKEND": "no"}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        trace = str(Path(tmp) / "trace.json") if cell.profile else ""
        spec = {"preset": cell.preset, "steps": steps, "window": window, "env": env, "overrides": overrides,
                "trace": trace}  # fmt: skip
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-c", CELL_SCRIPT, json.dumps(spec)], cwd=tree, timeout=timeout_s,
                                  env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]),
                                       "WANDB_MODE": "disabled"},
                                  capture_output=True, text=True)  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout_s:.0f} s", "wall_s": time.perf_counter() - start}
        out = {"wall_s": time.perf_counter() - start, "steps": steps}
        lines = [line for line in proc.stdout.splitlines() if line.startswith("CELL ")]
        if proc.returncode != 0 or not lines:
            return out | {"error": f"exit code {proc.returncode}: {(proc.stderr or proc.stdout)[-400:]}"}
        out |= json.loads(lines[-1][5:])
        if cell.profile and "error" not in out:
            out |= busy_share(Path(trace), n_critic)
    return out


def busy_share(trace: Path, n_critic: int) -> dict:
    """The GPU busy share of the steady steps in a profiler trace (see the module's docstring)."""
    events = json.loads(trace.read_text())["traceEvents"]
    gpu = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") in GPU_CATEGORIES and "dur" in e)
    ends = sorted(e["ts"] + e["dur"] for e in events if str(e.get("name", "")).startswith("Optimizer.step#"))
    if len(ends) < 8 or not gpu:
        return {"profile_error": f"{len(ends)} optimizer steps and {len(gpu)} GPU events in the trace"}
    t0, t1 = ends[len(ends) // 4], ends[-1]
    busy, reach, kernels = 0.0, t0, 0
    for start, end in gpu:
        kernels += t0 <= start < t1
        start, end = max(start, reach), min(end, t1)
        if end > start:
            busy += end - start
            reach = end
    g_steps = (len(ends) - 1 - len(ends) // 4) / (n_critic + 1)
    return {"gpu_busy": busy / (t1 - t0), "host_share": 1 - busy / (t1 - t0),
            "profiled_ms_per_g_step": (t1 - t0) / 1e3 / g_steps, "gpu_ms_per_g_step": busy / 1e3 / g_steps,
            "gpu_events_per_g_step": kernels / g_steps}  # fmt: skip


def run_study(out: Path, before: Path, budget_s: float, quick: bool, peaks: dict, flops: dict, log,
              only: str | None = None) -> dict:  # fmt: skip
    from bench.training import preset_config

    if not (before / "bench" / "training.py").is_file():
        raise SystemExit(f"error: --before {before}: no bench/training.py there (git archive 69acbe2 | tar -x -C DIR)")
    if out.exists() and not is_results(out):  # rewrite an earlier study's file, never another file
        raise SystemExit(f"error: --out {out} exists and is not a results file of python -m bench.gpu --step")
    data = {"peak": peaks, "flops": flops, "cells": [], "notes": []}
    n_critic = {p: preset_config(p).train.n_critic for p in STEPS}
    start = time.perf_counter()
    cells = plan() if only is None else [parse_cell(spec) for spec in only.split(",")]
    for cell in cells:
        left = budget_s - (time.perf_counter() - start)
        if left <= 0:
            data["notes"].append(f"budget spent: {cell} not run")
            continue
        result = run_cell(cell, before, quick, min(CELL_TIMEOUT_S, left + 60), n_critic[cell.preset])
        if "steady_img_per_s" in result:
            achieved = flops[cell.preset]["per_image"] * result["steady_img_per_s"]
            result |= {"mfu_measured_peak": achieved / peaks[cell.precision]}
        data["cells"].append(asdict(cell) | result)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, json.dumps(data, indent=1) + "\n")  # a kill mid-study keeps the cells before
        log(summary(data["cells"][-1]))
    data["total_s"] = time.perf_counter() - start
    write_atomic(out, json.dumps(data, indent=1) + "\n")
    log("\n".join(summary(c) for c in data["cells"]))
    return data


def is_results(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text()).get("cells"), list)
    except (OSError, ValueError, AttributeError):
        return False


def parse_cell(spec: str) -> Cell:
    """CODE:PRESET:BATCH:PRECISION:MODE[:profile], as in `--cells after:sngan_cifar10:256:bf16:none`."""
    parts = spec.split(":")
    ok = len(parts) in (5, 6) and parts[0] in ("after", "before") and parts[1] in STEPS and parts[2].isdigit()
    ok = ok and parts[3] in ("bf16", "fp32-tf32") and parts[4] in ("none", "default", "reduce-overhead")
    if not ok or parts[5:] not in ([], ["profile"]) or (parts[0] == "before" and parts[4] != "none"):
        raise SystemExit(f"error: --cells {spec!r}: expected CODE:PRESET:BATCH:PRECISION:MODE[:profile] with CODE "
                         f"after|before, PRESET {'|'.join(STEPS)}, PRECISION bf16|fp32-tf32, MODE "
                         "none|default|reduce-overhead (before: none)")  # fmt: skip
    return Cell(parts[0], parts[1], int(parts[2]), parts[3], parts[4], parts[5:] == ["profile"])


def summary(c: dict) -> str:
    text = f"{c['code']:6} {c['preset']} b{c['batch']} {c['precision']} {c['mode']}{' profiled' if c['profile'] else ''}: "
    if "error" in c:
        return text + f"ERROR {c['error'][-200:]!r} ({c['wall_s']:.0f} s)"
    if c["profile"]:
        if "profile_error" in c:
            return text + c["profile_error"]
        return text + (f"GPU busy {c['gpu_busy']:.1%}, host {c['host_share']:.1%}, "
                       f"{c['profiled_ms_per_g_step']:.2f} ms/G step profiled, {c['gpu_ms_per_g_step']:.2f} ms on GPU, "
                       f"{c['gpu_events_per_g_step']:.0f} GPU events/G step ({c['wall_s']:.0f} s); most host time: "
                       + ", ".join(f"{name} {ms:.0f} ms/{calls}" for name, ms, calls in c["host_top"][:6]))  # fmt: skip
    return text + (f"{c.get('steady_img_per_s', float('nan')):,.0f} img/s steady, "
                   f"MFU {c.get('mfu_measured_peak', float('nan')):.1%}, {c['peak_mem_gib']:.2f} GiB ({c['wall_s']:.0f} s)")  # fmt: skip


def table(data: dict) -> str:
    """The study's results as Markdown: img/s of each cell, and the profiled cells' shares."""
    rows = ["| preset | batch | precision | code | train.compile | img/s | MFU | GPU busy (profiled) | GPU ms / G step |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    cells = sorted(data["cells"], key=lambda c: (c["preset"], c["batch"], c["precision"], c["code"] == "after",
                                                 ("none", "default", "reduce-overhead").index(c["mode"]), c["profile"]))  # fmt: skip
    for c in cells:
        if "error" in c:
            measured = f"failed: {c['error'][:60]} | | |"
        elif c["profile"]:
            measured = f"(profiled) | | {c['gpu_busy']:.1%} | {c['gpu_ms_per_g_step']:.2f}"
        else:
            measured = f"{c['steady_img_per_s']:,.0f} | {c['mfu_measured_peak']:.1%} | |"
        rows.append(f"| {c['preset']} | {c['batch']} | {c['precision']} | {c['code']} | {c['mode']} | {measured} |")
    return "\n".join(rows)


if __name__ == "__main__":
    results = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "bench" / "gpu_step_results.json")
    try:
        print(table(json.loads(results.read_text())))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"error: {results}: not a results file of python -m bench.gpu --step ({err!r:.120})") from None
