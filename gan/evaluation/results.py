"""RUN_DIR/metrics.jsonl, RUN_DIR/best.json and the console table.

metrics.jsonl has one JSON object per evaluated checkpoint: step, kimg, fid, kid_mean, kid_std,
is_mean, is_std (null when not computed), num_samples, checkpoint, plus the full metric
`settings` (a checkpoint is evaluated again only under other settings) and `seconds`. Each line
is appended with one write() on an O_APPEND descriptor, so concurrent evaluators never interleave
and a crash leaves at most one cut line, which readers skip.
"""

import json
import math
import os
from pathlib import Path

from gan.run_folder import write_atomic

METRICS_FILE = "metrics.jsonl"
BEST_FILE = "best.json"
FIELDS = ("step", "kimg", "fid", "kid_mean", "kid_std", "is_mean", "is_std", "num_samples", "checkpoint")


def read_records(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def evaluated_steps(records: list[dict], settings: dict) -> set[int]:
    return {int(r["step"]) for r in records if r.get("settings") == settings}


def append_record(run_dir: Path, record: dict) -> None:
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(Path(run_dir) / METRICS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def best_record(records: list[dict], settings: dict) -> dict | None:
    """The lowest finite FID among the records with these settings."""
    scored = [r for r in records if r.get("settings") == settings and _finite(r.get("fid"))]
    return min(scored, key=lambda r: (r["fid"], r["step"])) if scored else None


def write_best(run_dir: Path, best: dict) -> None:
    write_atomic(Path(run_dir) / BEST_FILE, json.dumps(best, indent=2) + "\n")


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


# --------------------------------------------------------------------------- console


COLUMNS = (("step", 9), ("kimg", 9), ("fid", 10), ("kid_mean", 10), ("kid_std", 9), ("is_mean", 8),
           ("is_std", 8), ("num_samples", 11), ("seconds", 8), ("checkpoint", 0))  # fmt: skip


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def table_header() -> str:
    return "  ".join(name.rjust(width) if width else name for name, width in COLUMNS)


def table_row(record: dict) -> str:
    cells = {**record, "checkpoint": Path(str(record.get("checkpoint", ""))).name}
    return "  ".join(_cell(cells.get(name)).rjust(width) if width else _cell(cells.get(name))
                     for name, width in COLUMNS)  # fmt: skip
