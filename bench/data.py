"""The data path: preparing, reading, and training on a large prepared set, every figure a ratio from one run.

python -m bench.data [--quick] [--sections prepare,read,memory,startup] [--out bench/data_results.json]

Each comparison runs its candidates in turn (A, B, A, B, ...: bench.measure.alternate, as many
rounds as FULL or QUICK give that section) and keeps each one's best round, so that other work on a
shared machine hits all of them alike:
- prepare: `python -m gan.prepare` of a folder of synthetic 256 px JPEGs at 64 px RGB, --workers 1
  against --workers 2 (the JPEGs are read once before timing: the page cache holds them, so the
  figures are decoding and resizing, not the disk);
- read: the reader (make_dataloader over build_data's ImageData, batches of 64, gan.data.to_float),
  plain and wrapped by Accelerate as the loop reads it (gan.train_loop.real_batches), against
  DCGAN's training step (the loop's body: d_step, g_step, update_ema on one batch already in
  memory, with dcgan_cifar10's widths), at 64, 128 and 256 px, in this process;
- memory: the peak memory of `python train.py` for a fixed number of steps (64 px, small widths,
  one thread) on a prepared set of 1,000 images against one of 100,000 (1.2 GB), in a fresh child each: the kernel's peak RSS
  (os.wait4's ru_maxrss), and /proc/PID/status sampled during the run, which splits RSS into
  private memory (RssAnon) and pages of mapped files (RssFile: images.npy's pages belong to the
  shared page cache), and /proc/PID/smaps for the resident part of images.npy's mapping itself;
- startup: the time from starting `python train.py` to the first record in its train_log.jsonl
  (train.log_every=1: the end of the first training step), on the two sets.

Random prepared sets are written with gan.prepared.write_prepared from an in-memory Source.
The JPEGs are generated once into --work (a temporary folder by default) and reused by later runs;
GAN_CACHE_DIR points into a temporary folder and W&B is disabled, so nothing lands in ~/.cache.
"""

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.measure import alternate, machine
from gan.datasets._source import ArraySource

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "data_results.json"
PRESET = ROOT / "configs" / "dcgan_cifar10.yaml"  # DCGAN for RGB images; the size comes from the overrides
SECTIONS = ("prepare", "read", "memory", "startup")
BATCH = 64
JPEG_SIZE, JPEG_QUALITY = 256, 90
PREPARE_RESOLUTION = 64
# memory and start-up runs measure the data, not the networks: small widths, and one thread, since on a
# loaded machine every OpenMP region of a multi-threaded step waits for a descheduled thread
SMALL_WIDTHS = ["model.g_channels=16", "model.d_channels=16"]
TRAIN_THREADS = 1
POLL_S = 0.02  # how often a child's /proc/PID/status and train_log.jsonl are read
SMAPS_EVERY_S = 0.5  # /proc/PID/smaps lists every mapping of a torch process: read less often
TARGETS = {"read_x_step": 5.0, "memory_bytes": 100e6, "startup_s": 2.0}

FULL = {
    "jpegs": 20_000, "prepare_rounds": 1, "chunk": None,  # None: gan.prepare's default chunk, as a user gets
    "read_sets": {64: 20_000, 128: 8_000, 256: 2_000}, "read_s": 3.0, "read_rounds": 2,
    "step_steps": {64: 3, 128: 2, 256: 1},  # timed steps per round, after one warm-up step
    "memory_sets": (1_000, 100_000), "memory_steps": 50, "memory_rounds": 1, "startup_rounds": 3,
}  # fmt: skip
QUICK = {
    "jpegs": 1_000, "prepare_rounds": 1, "chunk": 125,  # 8 chunks: both workers of the pool get some
    "read_sets": {64: 2_000}, "read_s": 1.0, "read_rounds": 1, "step_steps": {64: 1},
    "memory_sets": (1_000, 20_000), "memory_steps": 10, "memory_rounds": 1, "startup_rounds": 1,
}  # fmt: skip


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def child_env(cache: Path) -> dict:
    return {**os.environ, "GAN_CACHE_DIR": str(cache), "WANDB_MODE": "disabled", "WANDB_SILENT": "true",
            "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip


# --------------------------------------------------------------------------- inputs


def synthetic_jpeg(rng: np.random.Generator, size: int):
    """Smooth random content: uniform noise of 4, 16 and 64 cells a side, each enlarged bicubically to
    size and blended over the coarser ones with a random weight. Such images compress like photographs
    (about 14 to 23 KiB at 256 px, quality 90), where pure noise would be several times larger."""
    from PIL import Image

    image = None
    for cells in (4, 16, 64):
        layer = Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8))
        layer = layer.resize((size, size), Image.BICUBIC)
        image = layer if image is None else Image.blend(image, layer, rng.uniform(0.15, 0.45))
    return image


def write_jpegs(task: tuple[str, int, int, int]) -> None:
    folder, start, stop, size = task
    rng = np.random.default_rng(start)  # one stream per slice: the same files whatever the pool's order
    for i in range(start, stop):
        synthetic_jpeg(rng, size).save(Path(folder) / f"{i:06d}.jpg", quality=JPEG_QUALITY)


def jpeg_folder(work: Path, count: int) -> tuple[Path, dict]:
    """A folder of `count` synthetic JPEGs, generated once (a pool of one process per core) and reused:
    the JSON file beside it, written last, records how long generating took."""
    folder = work / f"jpegs-{count}x{JPEG_SIZE}"
    record = work / f"{folder.name}.json"
    if folder.is_dir() and record.is_file():
        return folder, json.loads(record.read_text()) | {"reused": True}
    partial = work / f".{folder.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    processes = os.cpu_count() or 1
    log(f"  generating {count:,} JPEGs of {JPEG_SIZE} px into {folder} ({processes} processes, once)")
    start = time.perf_counter()
    tasks = [(str(partial), a, min(a + 500, count), JPEG_SIZE) for a in range(0, count, 500)]
    # spawn: the pool's processes need only numpy and PIL, not a fork of this process's torch state
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        for _ in pool.imap_unordered(write_jpegs, tasks):
            pass
    seconds = time.perf_counter() - start
    os.rename(partial, folder)
    sizes = np.array([p.stat().st_size for p in folder.iterdir()]) / 1024
    info = {"count": count, "size_px": JPEG_SIZE, "quality": JPEG_QUALITY, "generate_s": round(seconds, 1),
            "processes": processes, "mean_kib": round(float(sizes.mean()), 1), "min_kib": round(float(sizes.min()), 1),
            "max_kib": round(float(sizes.max()), 1), "total_mib": round(float(sizes.sum()) / 1024),
            "generated": datetime.datetime.now().isoformat(timespec="seconds")}  # fmt: skip
    record.write_text(json.dumps(info) + "\n")
    return folder, info | {"reused": False}


class RandomImages(ArraySource):
    """uint8 noise (N, 3, R, R) with label 0: a Source for gan.prepared.write_prepared. Reading a
    prepared set never decodes, so its content does not change what the reader or training costs."""

    name = "bench-random"

    def __init__(self, count: int, resolution: int, seed: int = 0):
        self.count, self.resolution, self.seed = count, resolution, seed

    def identity(self) -> dict:
        return {"name": self.name, "count": self.count, "resolution": self.resolution, "seed": self.seed}

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        shape = (self.count, 3, self.resolution, self.resolution)
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator), torch.zeros(self.count, dtype=torch.long)  # fmt: skip


def random_set(folder: Path, count: int, resolution: int) -> tuple[Path, float]:
    """A prepared set of `count` random images (written through the package's own writer); seconds taken."""
    from gan.prepared import write_prepared

    out = folder / f"random-{count}x{resolution}"
    start = time.perf_counter()
    write_prepared(RandomImages(count, resolution), out, resolution, 3, workers=1, say=lambda _: None)
    return out, time.perf_counter() - start


# --------------------------------------------------------------------------- child processes


STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def proc_status(pid: int) -> dict[str, int]:
    """STATUS_FIELDS of /proc/PID/status, in KiB ({} once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in STATUS_FIELDS:
            values[key] = int(rest.split()[0])
    return values


def mapped_kib(pid: int, file_name: str) -> int | None:
    """Resident KiB of the process's mappings of files named file_name (/proc/PID/smaps)."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return None
    total, inside = 0, False
    for line in text.splitlines():
        # a mapping's header starts with its hex address ("7f..-7f.. r--s 0 fd:01 123 /path"); a field, capitalised
        if line[:1] in "0123456789abcdef":
            inside = line.endswith("/" + file_name)
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of the process so far, all its threads (/proc/PID/stat, fields 14 and 15)."""
    try:  # the command name, field 2, is in parentheses and may hold spaces: count from the last ")"
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def run_child(cmd: list[str], env: dict, first_record: Path | None = None, mapped_file: str | None = None,
              timeout_s: float = 1800) -> dict:  # fmt: skip
    """Run cmd to its end, sampling its memory; its wall time, CPU time and peaks (KiB -> MiB).

    os.wait4 reaps this one child and returns its own resource usage: ru_maxrss is the kernel's
    peak RSS of the child (and of its children that it waited for, e.g. a pool), unlike
    RUSAGE_CHILDREN, which keeps the largest of every child this process ever had.
    """
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        peaks = dict.fromkeys(STATUS_FIELDS, 0)
        first_s, first_cpu_s, mapped_peak, smaps_at = None, None, None, 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter() - start
            for key, kib in proc_status(proc.pid).items():
                peaks[key] = max(peaks[key], kib)
            if first_s is None and first_record is not None and first_record.is_file() and first_record.stat().st_size:
                first_s = now  # one write() per record (gan.files.JsonlWriter): a non-empty file holds one
                first_cpu_s = cpu_seconds(proc.pid)  # what the start-up cost, whatever else ran on the machine
            if mapped_file and now - smaps_at >= SMAPS_EVERY_S:
                smaps_at, kib = now, mapped_kib(proc.pid, mapped_file)
                mapped_peak = max(mapped_peak or 0, kib or 0)
            if now > timeout_s:
                proc.kill()
            time.sleep(POLL_S)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, not by Popen
        if proc.returncode != 0:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace")[-400:]
            raise RuntimeError(f"{' '.join(cmd[1:4])} exited with {proc.returncode}: {tail}")
    result = {"child_wall_s": round(wall, 3), "child_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
              "child_peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}  # fmt: skip
    result |= {f"peak_{key}_mib": round(kib / 1024, 1) for key, kib in peaks.items()}
    if first_s is not None:
        result["first_record_s"] = round(first_s, 3)
        result["first_record_cpu_s"] = first_cpu_s and round(first_cpu_s, 2)
    if mapped_file:
        result[f"peak_mapped_{mapped_file}_mib"] = mapped_peak and round(mapped_peak / 1024, 1)
    return result


def own(result: dict) -> dict:
    """A child's result without measured()'s figures of this process's memory, which say nothing of the child."""
    return {k: v for k, v in result.items() if k not in ("peak_rss_mib", "rss_before_mib", "peak_rss_exact")}


# --------------------------------------------------------------------------- sections


def bench_prepare(work: Path, sizes: dict, env: dict) -> dict:
    folder, jpegs = jpeg_folder(work, sizes["jpegs"])
    log(f"  JPEGs: {jpegs['count']:,} at {JPEG_SIZE} px, mean {jpegs['mean_kib']} KiB, generated in "
        f"{jpegs['generate_s']} s" + (" (reused)" if jpegs["reused"] else ""))  # fmt: skip
    for path in folder.iterdir():  # into the page cache: every round then decodes from memory
        path.read_bytes()
    chunk = ["--chunk", str(sizes["chunk"])] if sizes["chunk"] else []

    def prepare(workers: int, threads: int | None = None) -> dict:
        out = work / f"prepared-{workers}w"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "gan.prepare", str(folder), str(out), "--resolution", str(PREPARE_RESOLUTION),
               "--channels", "3", "--workers", str(workers), *chunk]  # fmt: skip
        try:
            result = run_child(cmd, env if threads is None else env | {"OMP_NUM_THREADS": str(threads)})
            manifest = json.loads((out / "manifest.json").read_text())
        finally:
            shutil.rmtree(out, ignore_errors=True)
        if manifest["count"] != jpegs["count"]:
            raise RuntimeError(f"prepared {manifest['count']} of {jpegs['count']} JPEGs")
        return result | {"img_per_s": jpegs["count"] / result["child_wall_s"], "chunk": manifest["chunk"]}

    # --workers 1 decodes and resizes in the command's own process with torch's default thread count;
    # the pool's processes set one thread each. The third row runs --workers 1 with one thread too,
    # to tell the threads' share of the ratio from the processes'.
    candidates = {"1 worker": lambda: prepare(1), "2 workers": lambda: prepare(2),
                  "1 worker, OMP_NUM_THREADS=1": lambda: prepare(1, threads=1)}  # fmt: skip
    runs = alternate(candidates, sizes["prepare_rounds"], log)
    return {"jpegs": jpegs, "resolution": PREPARE_RESOLUTION, "channels": 3,
            "runs": {name: fastest([own(r) for r in rs]) for name, rs in runs.items()}}  # fmt: skip


def step_config(path: Path, resolution: int, *overrides: str):
    from gan.config import load_config

    return load_config(PRESET, ["data.name=prepared", f"data.root={path}", f"data.resolution={resolution}",
                                "data.channels=3", f"train.batch_size={BATCH}", "wandb.mode=disabled", *overrides])  # fmt: skip


def read_rate(batches, target_s: float) -> dict:
    """img/s of next(batches) + to_float over at least target_s, after a first batch (the iterator's set-up);
    the share of the time spent in to_float."""
    from gan.data import to_float

    next(batches)
    count, convert_s, wall, cpu = 0, 0.0, time.perf_counter(), time.process_time()
    while count < 10 or time.perf_counter() - wall < target_s:
        images, _ = next(batches)
        converting = time.perf_counter()
        to_float(images)
        convert_s += time.perf_counter() - converting
        count += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"img_per_s": count * BATCH / wall, "cpu_img_per_s": count * BATCH / cpu, "batches": count,
            "to_float_share": convert_s / wall}  # fmt: skip


def endless(loader):
    """The loader's batches, epoch after epoch (a new shuffle each)."""
    while True:
        yield from loader


def step_rate(nets, loss_fn, real_img, labels, accelerator, cfg, steps: int) -> dict:
    """img/s of the loop's body (gan.train_loop.run_training) on one batch already converted: only compute."""
    from gan.steps import d_step, g_step, update_ema

    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        for i in range(cfg.train.n_critic):
            d_step(nets, loss_fn, real_img, labels, accelerator, i)
        g_step(nets, loss_fn, len(real_img), labels, accelerator)
        update_ema(nets, accelerator)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"img_per_s": steps * BATCH / wall, "cpu_img_per_s": steps * BATCH / cpu, "steps": steps}


def bench_read(sets_dir: Path, sizes: dict) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    from gan.data import build_data, make_dataloader, to_float
    from gan.losses import build_loss
    from gan.train_loop import build_nets, real_batches

    # the loop's own data-loader settings (gan.train_loop.train)
    accelerator = Accelerator(dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=0,
                                                                         non_blocking=True))  # fmt: skip
    out = {}
    for resolution, count in sizes["read_sets"].items():
        path, write_s = random_set(sets_dir, count, resolution)
        cfg = step_config(path, resolution)
        data = build_data(cfg, say=log)
        torch.manual_seed(0)
        nets, loop_loader = build_nets(cfg, data.num_classes, accelerator, make_dataloader(data, BATCH))
        loss_fn = build_loss(cfg)
        real_uint8, labels = data.batch(range(BATCH))
        real_img = to_float(real_uint8)
        steps = sizes["step_steps"][resolution]
        log(f"  {resolution} px: {count:,} random images ({data.images.nbytes / 2**20:,.0f} MiB, written in "
            f"{write_s:.1f} s); one warm-up step, then {steps} timed step(s) per round")  # fmt: skip
        warm_up = step_rate(nets, loss_fn, real_img, labels, accelerator, cfg, 1)
        candidates = {
            "reader": lambda data=data: read_rate(endless(make_dataloader(data, BATCH)), sizes["read_s"]),
            "reader as the loop reads it": lambda loader=loop_loader: read_rate(
                real_batches(loader, accelerator, 0), sizes["read_s"]),
            "step": lambda nets=nets, loss_fn=loss_fn, real_img=real_img, labels=labels, cfg=cfg, steps=steps: (
                step_rate(nets, loss_fn, real_img, labels, accelerator, cfg, steps)),
        }  # fmt: skip
        runs = alternate(candidates, sizes["read_rounds"], log)
        out[resolution] = {"images": count, "set_mib": round(data.images.nbytes / 2**20), "write_s": round(write_s, 1),
                           "warm_up_step_s": round(BATCH / warm_up["img_per_s"], 2),
                           "runs": {name: fastest(rs) for name, rs in runs.items()}}  # fmt: skip
        del nets, loop_loader, candidates, data
        accelerator.free_memory()  # drops the Accelerator's references to this size's networks
        shutil.rmtree(path)
    return {"preset": PRESET.stem, "batch": BATCH, "read_s": sizes["read_s"], "sizes": out}


def train_run(path: Path, steps: int, log_every: int, env: dict, work: Path) -> dict:
    """`python train.py` on the prepared set at path (64 px, small widths), in a fresh run folder."""
    from gan.prepared import IMAGES
    from gan.run_folder import RunFolder

    run_dir = Path(tempfile.mkdtemp(dir=work)) / "run"
    cmd = [sys.executable, "train.py", "--config", str(PRESET), "--run-dir", str(run_dir),
           "data.name=prepared", f"data.root={path}", f"data.resolution={PREPARE_RESOLUTION}", "data.channels=3",
           *SMALL_WIDTHS, f"train.batch_size={BATCH}", f"train.steps={steps}", f"train.log_every={log_every}",
           f"train.sample_every={steps}", f"train.checkpoint_every={steps}", "wandb.mode=disabled"]  # fmt: skip
    try:
        return run_child(cmd, env | {"OMP_NUM_THREADS": str(TRAIN_THREADS)}, first_record=RunFolder(run_dir).train_log,
                         mapped_file=IMAGES)  # fmt: skip
    finally:
        shutil.rmtree(run_dir.parent, ignore_errors=True)


def memory_sets(sets_dir: Path, sizes: dict) -> dict[str, dict]:
    out = {}
    for count in sizes["memory_sets"]:
        path, seconds = random_set(sets_dir, count, PREPARE_RESOLUTION)
        mib = (path / "images.npy").stat().st_size / 2**20
        log(f"  prepared set of {count:,} random images at {PREPARE_RESOLUTION} px: {mib:,.0f} MiB, "
            f"written in {seconds:.1f} s")  # fmt: skip
        out[f"{count:,} images"] = {"path": path, "images": count, "images_npy_mib": round(mib),
                                    "write_s": round(seconds, 1)}  # fmt: skip
    return out


def bench_memory(sets: dict, sizes: dict, env: dict, work: Path) -> dict:
    steps = sizes["memory_steps"]
    candidates = {name: (lambda s=s: train_run(s["path"], steps, 10, env, work)) for name, s in sets.items()}
    runs = alternate(candidates, sizes["memory_rounds"], log)
    return {"steps": steps, "log_every": 10, "widths": SMALL_WIDTHS, "threads": TRAIN_THREADS, "kernel": platform.release(),
            "runs": {name: sets[name] | {"path": str(sets[name]["path"])} | highest([own(r) for r in rs])
                     for name, rs in runs.items()}}  # fmt: skip


def bench_startup(sets: dict, sizes: dict, env: dict, work: Path) -> dict:
    candidates = {name: (lambda s=s: train_run(s["path"], 1, 1, env, work)) for name, s in sets.items()}
    runs = alternate(candidates, sizes["startup_rounds"], log)
    out = {}
    for name, rs in runs.items():
        ok = [own(r) for r in rs if "error" not in r]
        firsts = [r["first_record_s"] for r in ok if "first_record_s" in r]
        cpus = [r["first_record_cpu_s"] for r in ok if r.get("first_record_cpu_s") is not None]
        out[name] = {"first_step_s": min(firsts, default=None), "rounds_first_step_s": firsts,
                     "first_step_cpu_s": min(cpus, default=None), "rounds_first_step_cpu_s": cpus,
                     "run_s": min((r["child_wall_s"] for r in ok), default=None),
                     "errors": [r["error"] for r in rs if "error" in r]}  # fmt: skip
    return {"steps": 1, "log_every": 1, "threads": TRAIN_THREADS, "runs": out}


# --------------------------------------------------------------------------- summaries


def fastest(runs: list[dict]) -> dict:
    """The round with the highest img/s (the least disturbed), every round's img/s, the best CPU-time rate."""
    ok = [r for r in runs if "img_per_s" in r]
    if not ok:
        return runs[-1]
    top = max(ok, key=lambda r: r["img_per_s"])
    cpu = max((r["cpu_img_per_s"] for r in ok if "cpu_img_per_s" in r), default=None)
    return top | {"rounds_img_per_s": [r.get("img_per_s") for r in runs]} | ({"cpu_img_per_s": cpu} if cpu else {})


def highest(runs: list[dict]) -> dict:
    """Memory over the rounds: each peak's highest value, the other fields from the last round."""
    ok = [r for r in runs if "error" not in r] or runs
    out = dict(ok[-1])
    for key in out:
        if key.startswith(("peak_", "child_peak")) and all(isinstance(r.get(key), int | float) for r in ok):
            out[key] = max(r[key] for r in ok)
    return out


def ratio(a, b) -> float | None:
    return a / b if a and b else None


def fmt(value, digits: int = 0, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


def rate(value) -> str:
    return "-" if value is None else fmt(value, 0 if value >= 100 else 1 if value >= 10 else 2)


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else "met" if ok else "**not met**"


def prepare_rows(p: dict) -> list[str]:
    j, runs = p["jpegs"], p["runs"]
    base = runs["1 worker"].get("img_per_s")
    generated = f"generated in {j['generate_s']} s by {j['processes']} processes" + (
        f" on {j['generated'][:10]}, reused" if j["reused"] else "")  # fmt: skip
    rows = [f"Preparing: `python -m gan.prepare` of {j['count']:,} synthetic {j['size_px']} px JPEGs (quality "
            f"{j['quality']}, {j['min_kib']}-{j['max_kib']} KiB, mean {j['mean_kib']} KiB, {j['total_mib']} MiB; "
            f"{generated}) to {p['resolution']} px RGB, the files in the page cache, best of the rounds:", "",
            "| --workers | seconds | img/s | x 1 worker | CPU s per 1,000 img | peak RSS MiB | chunk | rounds img/s |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in runs.items():
        if "error" in r:
            rows.append(f"| {name} | {r['error'][:100]} | | | | | | |")
            continue
        rows.append(f"| {name} | {fmt(r['child_wall_s'], 1)} | {rate(r['img_per_s'])} "
                    f"| **{fmt(ratio(r['img_per_s'], base), 2, 'x')}** "
                    f"| {fmt(1000 * r['child_cpu_s'] / p['jpegs']['count'], 2)} | {fmt(r['child_peak_rss_mib'])} "
                    f"| {r.get('chunk', '-')} | {' / '.join(rate(x) for x in r['rounds_img_per_s'])} |")  # fmt: skip
    return rows + [""]


def read_rows(r: dict) -> list[str]:
    rows = [f"Reading against training: the reader (make_dataloader over build_data's memory-mapped ImageData, "
            f"batches of {r['batch']} + to_float, at least {r['read_s']} s per round), the same wrapped by Accelerate "
            f"as the loop reads it, and {r['preset']}'s DCGAN step (D step + G step + EMA on one batch already in "
            "memory), alternated in one process, best of the rounds:", "",
            "| px | images (MiB) | reader img/s | as the loop reads it | step img/s | reader / step "
            "| loop's reader / step | by CPU time | to_float's share of reading | target >= 5x |",
            "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for px, e in r["sizes"].items():
        runs = e["runs"]
        reader, loop, step = (runs[k].get("img_per_s") for k in ("reader", "reader as the loop reads it", "step"))
        by_cpu = ratio(runs["reader as the loop reads it"].get("cpu_img_per_s"), runs["step"].get("cpu_img_per_s"))
        worst = ratio(min(reader or 0, loop or 0), step)
        rows.append(f"| {px} | {e['images']:,} ({e['set_mib']:,}) | {rate(reader)} | {rate(loop)} | {rate(step)} "
                    f"| **{fmt(ratio(reader, step), 0, 'x')}** | **{fmt(ratio(loop, step), 0, 'x')}** "
                    f"| {fmt(by_cpu, 0, 'x')} | {share(runs['reader'])} / {share(runs['reader as the loop reads it'])} "
                    f"| {verdict(worst and worst >= TARGETS['read_x_step'])} |")  # fmt: skip
    return rows + ["", "*by CPU time*: images per second of this process's CPU time, the loop's reader over the "
                   "step (the step runs on every core, the reader mostly on one). *to_float's share*: of the "
                   "reader's wall time, plain / as the loop reads it.", ""]  # fmt: skip


def share(run: dict) -> str:
    value = run.get("to_float_share")
    return "-" if value is None else f"{100 * value:.0f}%"


def memory_rows(m: dict, s: dict | None) -> list[str]:
    runs = m["runs"]
    (small_name, small), (large_name, large) = list(runs.items())
    mapped = "peak_mapped_images.npy_mib"
    rows = [f"Memory: `python train.py` for {m['steps']} steps at {PREPARE_RESOLUTION} px, batch {BATCH}, "
            f"{' '.join(m['widths'])}, OMP_NUM_THREADS={m['threads']}, data.name=prepared, a fresh process per run, "
            "alternated, highest of the rounds:",
            "", "| prepared set | images.npy MiB | peak RSS MiB (kernel) | peak RssAnon (private) | peak RssFile "
            "(mapped files) | images.npy resident | wall s |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in runs.items():
        if "error" in r:
            rows.append(f"| {name} | {r['error'][:100]} | | | | | |")
            continue
        rows.append(f"| {name} | {r['images_npy_mib']:,} | {fmt(r['child_peak_rss_mib'])} | {fmt(r['peak_RssAnon_mib'])} "
                    f"| {fmt(r['peak_RssFile_mib'])} | {fmt(r.get(mapped))} | {fmt(r['child_wall_s'], 1)} |")  # fmt: skip
    diff = {k: difference(large.get(k), small.get(k))
            for k in ("child_peak_rss_mib", "peak_RssAnon_mib", "peak_RssFile_mib", mapped)}  # fmt: skip
    rows.append(f"| difference | | {fmt(diff['child_peak_rss_mib'], 1)} | {fmt(diff['peak_RssAnon_mib'], 1)} "
                f"| {fmt(diff['peak_RssFile_mib'], 1)} | {fmt(diff[mapped], 1)} | |")  # fmt: skip
    limit_mib = TARGETS["memory_bytes"] / 2**20
    rss_ok = diff["child_peak_rss_mib"] is not None and diff["child_peak_rss_mib"] < limit_mib
    anon_ok = diff["peak_RssAnon_mib"] is not None and diff["peak_RssAnon_mib"] < limit_mib
    read_mib = m["steps"] * BATCH * 3 * PREPARE_RESOLUTION**2 / 2**20
    rows += ["", f"The {m['steps']} steps read at most {m['steps'] * BATCH:,} images ({read_mib:.0f} MiB) of the set; "
             "*images.npy resident* counts every page of the file that the kernel mapped into the process around "
             f"them (Linux {m.get('kernel', '?')} maps whole folios of the page cache on a fault, not single pages)."]
    rows += ["", f"Target, {large_name} against {small_name} under 100 MB ({limit_mib:.0f} MiB) apart: peak RSS "
             f"{verdict(rss_ok if diff['child_peak_rss_mib'] is not None else None)}; private memory (RssAnon) "
             f"{verdict(anon_ok if diff['peak_RssAnon_mib'] is not None else None)}. RssFile holds the pages of "
             "mapped files (libraries and images.npy): they are the page cache's, shared by every process that maps "
             "the file and dropped under memory pressure rather than swapped.", ""]  # fmt: skip
    if s:
        rows += startup_rows(s)
    return rows


def startup_rows(s: dict) -> list[str]:
    runs = s["runs"]
    (small_name, small), (large_name, large) = list(runs.items())
    rows = ["Start-up: `python train.py` with train.steps=1 train.log_every=1, the same settings, from starting the "
            "process to its first train_log.jsonl record (the end of the first step), in wall time and in the "
            "process's CPU time (/proc/PID/stat at that moment), best of the rounds:", "",
            "| prepared set | to the first step, s | rounds, s | CPU s to the first step | rounds, CPU s "
            "| whole run, s |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in runs.items():
        errors = f" ({'; '.join(e[:80] for e in r['errors'])})" if r["errors"] else ""
        rows.append(f"| {name} | {fmt(r['first_step_s'], 2)} | {' / '.join(fmt(x, 2) for x in r['rounds_first_step_s'])}"
                    f"{errors} | {fmt(r.get('first_step_cpu_s'), 2)} "
                    f"| {' / '.join(fmt(x, 2) for x in r.get('rounds_first_step_cpu_s', []))} | {fmt(r['run_s'], 2)} |")  # fmt: skip
    gap = difference(large.get("first_step_s"), small.get("first_step_s"))
    cpu_gap = difference(large.get("first_step_cpu_s"), small.get("first_step_cpu_s"))
    ok = None if gap is None else gap < TARGETS["startup_s"]  # later by less than the target; earlier is noise
    return rows + ["", f"{large_name} minus {small_name}: {fmt(gap, 2)} s, {fmt(cpu_gap, 2)} CPU s (target: at most "
                   f"{TARGETS['startup_s']:.0f} s later): {verdict(ok)}.", ""]  # fmt: skip


def difference(a, b) -> float | None:
    return a - b if a is not None and b is not None else None


def render(r: dict) -> str:
    m = r["machine"]
    mode = f"`{r['command']}`"
    lines = [f"Measured by {mode} on {r['date']}: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; torch "
             f"{m['torch']}, {m['torch_threads']} thread(s). Load average {m['load_average_start']} at the start, "
             f"{m.get('load_average_end', '-')} at the end: every ratio is of runs alternated in this one run.", ""]  # fmt: skip
    if "prepare" in r:
        lines += prepare_rows(r["prepare"])
    if "read" in r:
        lines += read_rows(r["read"])
    if "memory" in r:
        lines += memory_rows(r["memory"], r.get("startup"))
    elif "startup" in r:
        lines += startup_rows(r["startup"])
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.data", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, one round: a smoke check (~3 min)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"any of {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the results (JSON)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "gan-bench-data",
                        help="where the synthetic JPEGs are kept between runs (default: %(default)s)")  # fmt: skip
    args = parser.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    if set(args.sections) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(set(args.sections) - set(SECTIONS))}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="run-", dir=args.work) as tmp:
        tmp = Path(tmp)
        env = child_env(tmp / "cache")
        os.environ.update(GAN_CACHE_DIR=env["GAN_CACHE_DIR"], WANDB_MODE="disabled", WANDB_SILENT="true")
        info = machine()
        log(f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['torch_threads']} threads; "
            f"load average {info['load_average_start']}")  # fmt: skip
        command = " ".join(["python -m bench.data", *(sys.argv[1:] if argv is None else argv)])
        results = {"date": datetime.date.today().isoformat(), "command": command, "quick": args.quick, "machine": info,
                   "sizes": {k: (v if not isinstance(v, dict) else {str(a): b for a, b in v.items()})
                             for k, v in sizes.items()}, "targets": TARGETS}  # fmt: skip

        def save() -> None:
            results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
            results["seconds"] = round(time.perf_counter() - started)
            args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")

        if "prepare" in args.sections:
            log("prepare")
            results["prepare"] = bench_prepare(args.work, sizes, env)
            save()
        if "read" in args.sections:
            log("read")
            results["read"] = bench_read(tmp, sizes)
            save()
        if "memory" in args.sections or "startup" in args.sections:
            log("memory and start-up: prepared sets")
            sets = memory_sets(tmp, sizes)
            if "memory" in args.sections:
                log("memory")
                results["memory"] = bench_memory(sets, sizes, env, tmp)
                save()
            if "startup" in args.sections:
                log("startup")
                results["startup"] = bench_startup(sets, sizes, env, tmp)
        save()
    print(render(results))
    log(f"wrote {args.out} ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
