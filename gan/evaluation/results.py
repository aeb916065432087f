"""RUN_DIR/metrics.jsonl, RUN_DIR/best.json and the console table.

metrics.jsonl has one JSON object per evaluated checkpoint: step, kimg, every registered metric's
keys (fid, kid_mean, kid_std, is_mean, is_std; null when not computed), num_samples, checkpoint,
plus the full metric `settings` (a checkpoint is evaluated again only under other settings) and
`seconds`. Each line is appended with one write() on an O_APPEND descriptor
(gan.files.append_jsonl), so concurrent evaluators never interleave; a line cut by a crash is
closed before the next record and skipped, with a warning, by readers.
"""

import errno
import json
import math
import os
import tempfile
from pathlib import Path

from gan.errors import GanError
from gan.evaluation.metrics import columns as metric_columns
from gan.files import append_jsonl, read_jsonl, write_atomic
from gan.run_folder import RunFolder, best_lock, best_step, step_name


def check_writable(run_dir: Path) -> None:
    """GanError unless metrics.jsonl can be appended to and best.json replaced in run_dir.

    A real write probe, not a permission check: root ignores permissions, a read-only mount does not.
    Nothing is left behind: an existing metrics.jsonl is opened without writing, and the probe file
    has no name (O_TMPFILE) or is removed on close.
    """
    run_dir, folder = Path(run_dir), RunFolder(Path(run_dir))
    try:
        for path in (folder.metrics, folder.best):
            if path.is_dir():
                raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        if folder.metrics.exists():
            os.close(os.open(folder.metrics, os.O_WRONLY | os.O_APPEND))
        with tempfile.TemporaryFile(dir=run_dir, prefix=".write-probe."):
            pass
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        raise GanError(f"run folder {str(run_dir)!r} cannot be written ({where}{err.strerror or err}); "
                       f"evaluate.py appends to {folder.metrics.name} and replaces {folder.best.name} there: make it "
                       "writable, or evaluate a copy") from None  # fmt: skip


def read_records(run_dir: Path) -> list[dict]:
    return [r for r in read_jsonl(RunFolder(Path(run_dir)).metrics) if isinstance(r.get("step"), int)]


def evaluated_steps(records: list[dict], settings: dict) -> set[int]:
    return {int(r["step"]) for r in records if r.get("settings") == settings}


def append_record(run_dir: Path, record: dict) -> None:
    append_jsonl(RunFolder(Path(run_dir)).metrics, record)


def best_record(records: list[dict], settings: dict, run_dir: Path | None = None) -> dict | None:
    """The lowest finite FID among the records with these settings (whose checkpoint still exists,
    given run_dir)."""
    scored = [r for r in records if r.get("settings") == settings and _finite(r.get("fid"))]
    if run_dir is not None:
        kept = RunFolder(Path(run_dir)).checkpoints
        scored = [r for r in scored if (kept / step_name(r["step"])).is_dir()]
    return min(scored, key=lambda r: (r["fid"], r["step"])) if scored else None


def update_best(run_dir: Path, settings: dict) -> dict | None:
    """Write best.json when it is missing or differs from the best record with these settings whose
    checkpoint exists (deleted, cut, written for other settings, or naming a checkpoint rotated away
    before it was scored best); returns that record. Under best_lock, so rotation, which keeps the
    checkpoint best.json names, cannot remove it in between."""
    folder = RunFolder(Path(run_dir))
    with best_lock(run_dir):
        best = best_record(read_records(run_dir), settings, run_dir)
        if best is not None:
            text = json.dumps(best, indent=2) + "\n"
            try:
                current = folder.best.read_text()
            except (OSError, ValueError):  # missing, or not text
                current = None
            if current != text:
                write_atomic(folder.best, text)
        elif (step := best_step(run_dir)) is not None and not (folder.checkpoints / step_name(step)).is_dir():
            folder.best.unlink(missing_ok=True)  # it names a checkpoint that is gone
    return best


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


# --------------------------------------------------------------------------- console


def columns() -> tuple[tuple[str, int], ...]:
    """(record key, width) of each column; width 0: the last, unpadded. The metrics' own come from their modules."""
    return (("step", 9), ("kimg", 9), *metric_columns(), ("num_samples", 11), ("seconds", 8), ("checkpoint", 0))


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def table_header() -> str:
    return "  ".join(name.rjust(width) if width else name for name, width in columns())


def table_row(record: dict) -> str:
    cells = {**record, "checkpoint": Path(str(record.get("checkpoint", ""))).name}
    return "  ".join(_cell(cells.get(name)).rjust(width) if width else _cell(cells.get(name))
                     for name, width in columns())  # fmt: skip
