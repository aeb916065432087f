"""Files that survive a crash: atomic replacement, and JSONL that a torn line cannot corrupt.

write_atomic: the content goes to a temporary name in the same folder, is flushed to disk and
renamed over the target, so a reader sees the old file or the new one, never a part; the
temporary file never outlives a failure.

JSONL (train_log.jsonl, metrics.jsonl): one JSON object per line. kill -9 or a full disk can
leave the last line cut. Appending starts a new line first when the file does not end in one,
so the next record is never glued onto the cut one; readers skip a line that does not parse,
with a warning naming the file and line.
"""

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, content: str | bytes | Callable[[Path], None]) -> None:
    """Replace path with content (text, bytes, or a function that writes a given path)."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
        fsync(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; run folders and the cache are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync(path: Path) -> None:
    """Flush a file's (or a folder's) data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- JSONL


def _needs_newline(fd: int) -> bool:
    """True when the file behind fd is non-empty and its last byte is not a newline (a torn line)."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def append_jsonl(path: Path, record: dict) -> None:
    """Append one record as one write() on an O_APPEND descriptor, then fsync.

    Concurrent writers never interleave inside a line; a torn last line is closed first.
    """
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        line = json.dumps(record) + "\n"
        if _needs_newline(fd):
            line = "\n" + line
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def open_jsonl(path: Path):
    """A text file opened for appending records line by line; a torn last line is closed first."""
    f = open(path, "a+b", buffering=0)
    try:
        if _needs_newline(f.fileno()):
            f.write(b"\n")
    except BaseException:
        f.close()
        raise
    return JsonlWriter(f)


class JsonlWriter:
    def __init__(self, f):
        self.f = f

    def write(self, record: dict) -> None:
        self.f.write((json.dumps(record) + "\n").encode())

    def close(self) -> None:
        self.f.close()


_warned: set[tuple[str, tuple[int, ...]]] = set()  # (file, its bad lines) already reported by this process


def read_jsonl(path: Path, warn: bool = True) -> list[dict]:
    """The records of a JSONL file ([] when it does not exist); lines that are not a JSON object
    (a line cut by a crash) are skipped, with one warning on stderr, once per process for the same
    bad lines (an evaluator in --watch mode reads metrics.jsonl at every poll)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records, bad = [], []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: a line of 100,000 nested brackets
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    if bad and warn and (str(path), tuple(bad)) not in _warned:
        _warned.add((str(path), tuple(bad)))
        where = f"line {bad[0]}" if len(bad) == 1 else f"{len(bad)} lines (first: line {bad[0]})"
        print(f"warning: {path}: skipped {where} that is not a complete JSON record (cut by a crash?)",
              file=sys.stderr, flush=True)  # fmt: skip
    return records
