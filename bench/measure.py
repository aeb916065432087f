"""Measuring on a shared machine: alternated rounds, best-of-N, peak memory per measurement, the machine.

Every comparison runs its candidates in turn (A, B, A, B, ...), so drift in the machine's load
hits all of them alike, and keeps each one's best: on a busy CPU the fastest window of steps is
the one least disturbed by other work. Every candidate gets the same number of equal windows.
"""

import ctypes
import ctypes.util
import gc
import os
import platform
import resource
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import torch

MIB = 2**20


def status_kib(field: str) -> int | None:
    """A 'VmHWM:   1234 kB' line of /proc/self/status, in KiB (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakRSS:
    """Peak resident memory (MiB) while the with-block runs, in this process.

    On entry, garbage is collected, glibc's free heap handed back to the kernel (malloc_trim),
    and the kernel's high-water mark reset to the current RSS (/proc/self/clear_refs, Linux >= 4.0);
    VmHWM on exit is then the block's own peak, on top of what the process already held (`start_mib`).
    Where the reset is refused, `peak_mib` is the process's high-water mark since it started
    (getrusage) and `exact` is False.
    """

    def __enter__(self):
        gc.collect()
        libc = ctypes.util.find_library("c")
        if libc:
            ctypes.CDLL(libc).malloc_trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.exact = True
        except OSError:
            self.exact = False
        self.start_mib = (status_kib("VmRSS") or 0) / 1024
        return self

    def __exit__(self, *exc):
        hwm = status_kib("VmHWM") if self.exact else None
        if hwm is None:  # ru_maxrss is in KiB on Linux
            hwm, self.exact = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, False
        self.peak_mib = hwm / 1024
        return False


def measured(fn: Callable[[], dict]) -> dict:
    """fn's result plus its peak RSS and wall time."""
    with PeakRSS() as mem:
        start = time.perf_counter()
        try:
            out = fn()
        except Exception as err:  # one failed candidate (e.g. a compiler error) must not end the bench
            out = {"error": f"{err.__class__.__name__}: {str(err)[:300]}"}
        seconds = time.perf_counter() - start
    return out | {"peak_rss_mib": round(mem.peak_mib), "rss_before_mib": round(mem.start_mib),
                  "peak_rss_exact": mem.exact, "wall_s": round(seconds, 3)}  # fmt: skip


def window_rates(marks: list[tuple[float, float]], images_per_window: int) -> dict:
    """Rates from (wall, CPU) time marks taken at the end of equal windows, the first mark ending the
    warm-up: the mean over all later windows, and the fastest single window (the least disturbed)."""
    walls = [b[0] - a[0] for a, b in pairwise(marks)]
    cpus = [max(b[1] - a[1], 1e-9) for a, b in pairwise(marks)]
    if not walls:
        return {}
    total = images_per_window * len(walls)
    return {"steady_img_per_s": total / sum(walls), "steady_cpu_img_per_s": total / sum(cpus),
            "best_window_img_per_s": images_per_window / min(walls),
            "best_window_cpu_img_per_s": images_per_window / min(cpus), "windows": len(walls)}  # fmt: skip


def alternate(candidates: dict[str, Callable[[], dict]], repeats: int, log=print,
              before_round: Callable[[], None] | None = None) -> dict[str, list[dict]]:  # fmt: skip
    """Run every candidate once per round, in turn, for `repeats` rounds; all results per candidate."""
    runs: dict[str, list[dict]] = {name: [] for name in candidates}
    for round_ in range(repeats):
        if before_round is not None:
            before_round()
        for name, fn in candidates.items():
            result = measured(fn)
            runs[name].append(result)
            log(f"    round {round_ + 1}/{repeats} {name}: " + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
                if k in ("img_per_s", "steady_img_per_s", "best_window_img_per_s", "peak_rss_mib", "wall_s", "error")))  # fmt: skip
    return runs


def logged_rates(windows: list[dict]) -> dict:
    """Rates from the train/img_per_s our loop logs per window (train_log.jsonl), the first window
    ending the warm-up: the mean over all later windows, and the fastest single window."""
    later = [w["train/img_per_s"] for w in windows[1:] if w.get("train/img_per_s")]
    if not later:
        return {}
    return {"steady_img_per_s": len(later) / sum(1 / rate for rate in later), "best_window_img_per_s": max(later),
            "windows": len(later)}  # fmt: skip


RATES = ("steady_img_per_s", "steady_cpu_img_per_s", "best_window_img_per_s", "best_window_cpu_img_per_s")


def best(runs: list[dict]) -> dict:
    """Each rate's best over the rounds (the least disturbed), every round's best-window rate, the
    highest peak memory; other fields from the round with the fastest window."""
    ok = [r for r in runs if r.get("best_window_img_per_s") is not None]
    if not ok:
        return runs[-1] | {"rounds": [None] * len(runs)}
    top = max(ok, key=lambda r: r["best_window_img_per_s"])
    return top | {rate: max(r[rate] for r in ok) for rate in RATES if rate in top} | {
        "rounds": [r.get("best_window_img_per_s") for r in runs], "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def simd() -> list[str]:
    """The vector extensions that decide a CPU's speed on these networks (bf16 needs avx512_bf16 or amx)."""
    flags = cpu_flags()
    return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]


def machine() -> dict:
    import accelerate

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "simd": simd(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
