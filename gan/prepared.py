"""Prepared data sets: images decoded once into a memory-mapped .npy that every process reads.

A prepared set is a folder:
- `images.npy`: uint8 (N, C, R, R) in numpy's .npy format; `numpy.load(path, mmap_mode="r")`
  maps it, so a process holds only the pages it reads and the processes of a node share the
  operating system's page cache;
- `labels.npy`: int64 (N,);
- `manifest.json`: the count, resolution, channels, class names, the source, the files skipped
  and why, and a content digest (BLAKE2b of the shape, the images in order, then the labels).

Writing (`write_prepared`) happens in a hidden `.OUT.partial` folder beside OUT, renamed to OUT
when complete, so an interrupted run leaves nothing that looks like a prepared set:
1. the source's items are cut into chunks; workers decode, resize (gan.data.fit_images) and save
   each chunk as its own part file, and a journal line records each part once it is on disk;
2. the parts are copied, in order, into `images.npy`; each part is deleted once a journal line
   records its copy, so the disk holds the set about once, plus one part;
3. the manifest is written and the folder renamed.
Running the same request again resumes from the journals; a different request starts over.
Memory stays bounded by the chunk size whatever the number of images.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gan.errors import GanError, quote
from gan.files import append_jsonl, fsync, read_jsonl, write_atomic

FORMAT = "gan-prepared-1"
MANIFEST, IMAGES, LABELS = "manifest.json", "images.npy", "labels.npy"
CHUNK_BYTES = 32 * 2**20  # resized pixels per chunk: with DECODE_BATCH, bounds each worker's memory
DECODE_BATCH = 16  # images decoded at their source size before they are resized
MAX_CHUNK = 4096  # images per chunk, for small images
SKIPPED_LISTED = 20  # skipped files named in the manifest; all are counted
PROGRESS_SECONDS = 10.0


@dataclass
class PreparedSet:
    """A prepared set opened for reading: `images` is a read-only memory map."""

    path: Path
    manifest: dict
    images: np.ndarray  # uint8 (N, C, R, R), np.memmap
    labels: np.ndarray  # int64 (N,)

    @property
    def num_classes(self) -> int:
        return max(1, len(self.manifest["class_names"]))

    @property
    def digest(self) -> str:
        return self.manifest["digest"]


class RowReader:
    """Rows of a prepared set's images.npy read with pread into private buffers.

    The operating system's page cache serves them, shared by every process of the node, but is not
    mapped into this process: indexing the memory map instead would count every page it touches
    (and the kernel's read-ahead around it) in the process's resident memory.
    """

    def __init__(self, images: np.memmap):
        self.path, self.offset = images.filename, images.offset
        self.row_shape = images.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape))
        self._fd, self._pid = None, None

    def __getstate__(self):  # a descriptor does not cross processes: each opens its own
        return {**self.__dict__, "_fd": None, "_pid": None}

    def read(self, index) -> np.ndarray:
        if self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        out = np.empty((len(index), *self.row_shape), dtype=np.uint8)
        for k, i in enumerate(index):
            if os.preadv(self._fd, [out[k]], self.offset + int(i) * self.row_bytes) != self.row_bytes:
                raise GanError(f"{quote(str(self.path))} ends before row {int(i)}: the file was cut; prepare the set again")
        return out


def chunk_size(resolution: int, channels: int) -> int:
    return max(1, min(MAX_CHUNK, CHUNK_BYTES // (channels * resolution * resolution)))


# --------------------------------------------------------------------------- reading


def is_prepared(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def read_manifest(path: Path) -> dict:
    file = path / MANIFEST
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GanError(f"{quote(str(path))} is not a prepared data set (no {MANIFEST}); "
                       "make one with: python -m gan.prepare SOURCE OUT --resolution R --channels C") from None  # fmt: skip
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise GanError(f"{quote(str(file))} cannot be read as a prepared set's manifest "
                       f"({err.__class__.__name__}); prepare the set again") from None  # fmt: skip
    fields = {"format": str, "count": int, "resolution": int, "channels": int, "class_names": list, "digest": str}
    bad = [k for k, kind in fields.items() if not isinstance(manifest, dict) or not isinstance(manifest.get(k), kind)]
    if bad or manifest["format"] != FORMAT:
        what = f"format {quote(manifest.get('format'))}, not {FORMAT}" if not bad else f"no valid {', '.join(bad)}"
        raise GanError(f"{quote(str(file))}: {what}; prepare the set again with python -m gan.prepare")
    return manifest


def open_prepared(path: Path) -> PreparedSet:
    """The prepared set at path, its files checked against the manifest (shape, type, labels)."""
    path = Path(path)
    manifest = read_manifest(path)
    n, c, r = manifest["count"], manifest["channels"], manifest["resolution"]
    images = _load_npy(path / IMAGES, mmap=True)
    labels = _load_npy(path / LABELS, mmap=False)
    if images.dtype != np.uint8 or images.shape != (n, c, r, r) or not images.flags.c_contiguous:
        raise GanError(f"{quote(str(path / IMAGES))} holds {images.dtype} {tuple(images.shape)}, but the manifest "
                       f"says uint8 {(n, c, r, r)}; prepare the set again")  # fmt: skip
    if labels.dtype != np.int64 or labels.shape != (n,):
        raise GanError(f"{quote(str(path / LABELS))} holds {labels.dtype} {tuple(labels.shape)}, but the manifest "
                       f"says int64 ({n},); prepare the set again")  # fmt: skip
    classes = max(1, len(manifest["class_names"]))
    if n and (labels.min() < 0 or labels.max() >= classes):
        raise GanError(f"{quote(str(path / LABELS))} holds labels outside [0, {classes - 1}]; prepare the set again")
    return PreparedSet(path, manifest, images, labels)


def _load_npy(file: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise GanError(f"{quote(str(file))} is missing; prepare the set again") from None
    except (OSError, ValueError) as err:
        raise GanError(f"{quote(str(file))} is not a readable .npy file ({cut_reason(err)}); "
                       "prepare the set again") from None  # fmt: skip


def cut_reason(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{err.__class__.__name__}: {text[:80]}" if text else err.__class__.__name__


# --------------------------------------------------------------------------- writing


def request(source, resolution: int, channels: int, chunk: int | None = None) -> dict:
    """What a prepared set is made from; equal requests give equal sets (the chunk size only decides
    how the work is cut, and is part of the request so that a resumed run cuts it the same way)."""
    return {"format": FORMAT, "source": source.identity(), "resolution": resolution, "channels": channels,
            "chunk": chunk or chunk_size(resolution, channels)}  # fmt: skip


def request_key(source, resolution: int, channels: int) -> str:
    return hashlib.blake2b(json.dumps(request(source, resolution, channels), sort_keys=True).encode(),
                           digest_size=8).hexdigest()  # fmt: skip


def write_prepared(source, out: Path, resolution: int, channels: int, workers: int = 1, say=print,
                   chunk: int | None = None) -> PreparedSet:
    """Prepare `source` into `out` (see the module docstring); returns it opened.

    An `out` that already holds this request's set is returned as it is; another prepared set or
    any other file at `out` is an error. Concurrent calls for one `out` (processes, nodes on a
    shared filesystem) take turns on a lock file beside it: the first prepares, the others reuse.
    """
    out = Path(out)
    job = request(source, resolution, channels, chunk)
    with _lock(out):
        if out.exists() or out.is_symlink():
            return _existing(out, job)
        partial = out.parent / f".{out.name}.partial"
        _start_or_resume(partial, job, say)
        items = source.items()
        chunk = job["chunk"]
        chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
        records = _decode_all(source, chunks, partial, resolution, channels, workers, say)
        _check_classes(source, records)
        manifest = _assemble(source, job, records, partial, say)
        write_atomic(partial / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        shutil.rmtree(partial / "parts", ignore_errors=True)
        for name in ("parts.jsonl", "assembled.jsonl", "job.json"):
            (partial / name).unlink(missing_ok=True)
        os.rename(partial, out)
        fsync(out.parent)
    return open_prepared(out)


@contextlib.contextmanager
def _lock(out: Path):
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        lock = out.parent / f".{out.name}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise GanError(f"cannot write beside {quote(str(out))}: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another process prepares the same set
        yield
        # Done: later callers find OUT. One that waits on this file's lock finds OUT too once it gets it.
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _existing(out: Path, job: dict) -> PreparedSet:
    if not out.is_dir() or not is_prepared(out):
        raise GanError(f"{quote(str(out))} exists and is not a prepared data set; choose another OUT")
    found = read_manifest(out)
    same = all(found.get(k) == job[k] for k in ("resolution", "channels")) and found.get("source") == job["source"]
    if not same:
        raise GanError(f"{quote(str(out))} already holds another prepared set ({found['count']} images of "
                       f"{found['resolution']} px from {quote(found.get('source', {}).get('name'))}); "
                       "choose another OUT or remove it")  # fmt: skip
    return open_prepared(out)


def _start_or_resume(partial: Path, job: dict, say) -> None:
    job_file = partial / "job.json"
    if partial.exists():
        try:
            previous = json.loads(job_file.read_text())
        except (OSError, ValueError):
            previous = None
        if previous == job:
            done = len(read_jsonl(partial / "parts.jsonl", warn=False))
            say(f"resuming the interrupted preparation in {partial} ({done} chunk(s) already done)")
            return
        if not set(os.listdir(partial)) <= {"job.json", "parts", "parts.jsonl", "assembled.jsonl", IMAGES,
                                            LABELS, MANIFEST}:  # fmt: skip
            raise GanError(f"{quote(str(partial))} holds files gan.prepare did not write; move it away")
        say(f"starting over: {partial} was left by a preparation with other settings")
        shutil.rmtree(partial)
    try:
        (partial / "parts").mkdir(parents=True)
        write_atomic(job_file, json.dumps(job, sort_keys=True))
    except OSError as err:
        raise GanError(f"cannot write {quote(str(partial))}: {err.strerror}") from None


def _decode_all(source, chunks: list, partial: Path, resolution: int, channels: int, workers: int, say) -> dict:
    """chunk index -> journal record; decodes the chunks the journal does not hold yet."""
    journal = partial / "parts.jsonl"
    records = {r["chunk"]: r for r in read_jsonl(journal, warn=False)}  # a torn line: that chunk again
    # a part's images are deleted once copied into images.npy; its labels stay until the end
    records = {i: r for i, r in records.items() if i < len(chunks) and _part(partial, i, "labels").exists()}
    todo = [i for i in range(len(chunks)) if i not in records]
    tasks = [(i, chunks[i], str(partial / "parts"), resolution, channels) for i in todo]
    total = sum(len(c) for c in chunks)
    seen = total - sum(len(chunks[i]) for i in todo)
    start = last = time.monotonic()
    for record in _run(source, tasks, workers):
        append_jsonl(journal, record)
        records[record["chunk"]] = record
        seen += len(chunks[record["chunk"]])
        if time.monotonic() - last >= PROGRESS_SECONDS:
            last = time.monotonic()
            say(f"prepared {seen:,} of {total:,} files ({seen / max(last - start, 1e-9):,.0f} files/s)")
    return records


def _run(source, tasks: list, workers: int):
    """Each task's record, decoded in this process (workers=1) or in a pool of spawned processes."""
    if workers <= 1 or len(tasks) <= 1:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one image at a time: more threads only add their overhead
        try:
            for task in tasks:
                yield _decode_chunk(source, *task)
        finally:
            torch.set_num_threads(threads)
        return
    import multiprocessing

    # spawn: a forked child would inherit torch's thread pools and locks mid-use
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (source,)) as pool:
        yield from pool.imap_unordered(_decode_in_worker, tasks)


_WORKER_SOURCE = None


def _init_worker(source) -> None:
    global _WORKER_SOURCE
    import torch

    torch.set_num_threads(1)  # the pool's processes are the parallelism
    _WORKER_SOURCE = source


def _decode_in_worker(task):
    return _decode_chunk(_WORKER_SOURCE, *task)


def _part(partial_or_parts: Path, index: int, kind: str) -> Path:
    parts = partial_or_parts if partial_or_parts.name == "parts" else partial_or_parts / "parts"
    return parts / f"part-{index:07d}.{kind}.npy"


def _decode_chunk(source, index: int, items: list, parts: str, resolution: int, channels: int) -> dict:
    """Decode, resize and save one chunk; its journal record.

    The items are decoded DECODE_BATCH at a time and resized at once, so a worker holds the chunk at
    the output size plus one small batch at the source's size (a folder of large photos included).
    """
    import torch

    from gan.data import fit_images

    resized, labels, skipped = [], [], []
    for start in range(0, len(items), DECODE_BATCH):
        decoded = source.decode(items[start : start + DECODE_BATCH], channels)
        if isinstance(decoded.images, torch.Tensor):  # one array of equal sizes: resized at once
            resized.append(fit_images(decoded.images, resolution, channels))
        elif decoded.images:
            resized.append(torch.stack([fit_images(x.unsqueeze(0), resolution, channels)[0] for x in decoded.images]))
        labels += decoded.labels
        skipped += [list(s) for s in decoded.skipped]
    empty = torch.empty(0, channels, resolution, resolution, dtype=torch.uint8)
    pixels = np.ascontiguousarray(torch.cat(resized).numpy() if resized else empty.numpy())
    labels = np.asarray(labels, dtype=np.int64)
    for kind, array in (("images", pixels), ("labels", labels)):
        write_atomic(_part(Path(parts), index, kind), lambda tmp, a=array: _save_npy(tmp, a))
    return {"chunk": index, "count": len(labels), "skipped": skipped, "labels": sorted(set(labels.tolist()))}


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _check_classes(source, records: dict) -> None:
    if len(source.class_names) < 2:
        return
    found = set().union(*(r["labels"] for r in records.values()))
    empty = [name for label, name in enumerate(source.class_names) if label not in found]
    if empty:
        raise GanError(f"{_where(source)}: class folder(s) {', '.join(map(repr, empty))} hold no readable image; "
                       "every first-level sub-folder is a class: add images or move the folder out")  # fmt: skip


def _assemble(source, job: dict, records: dict, partial: Path, say) -> dict:
    """Copy the parts into images.npy and labels.npy; the manifest."""
    order = sorted(records)
    counts = [records[i]["count"] for i in order]
    total = sum(counts)
    if total == 0:
        raise GanError(f"{_where(source)} holds no readable images: none of its "
                       f"{sum(len(r['skipped']) for r in records.values())} image file(s) decodes, e.g. "
                       f"{quote(_first_skipped(records))}")  # fmt: skip
    shape = (total, job["channels"], job["resolution"], job["resolution"])
    images_file, assembled = partial / IMAGES, partial / "assembled.jsonl"
    copied = {r["chunk"] for r in read_jsonl(assembled, warn=False)}
    if copied and images_file.exists():
        images = np.load(images_file, mmap_mode="r+")
    else:
        images = np.lib.format.open_memmap(images_file, mode="w+", dtype=np.uint8, shape=shape)
        copied = set()
    labels = np.empty(total, dtype=np.int64)
    # The digest hashes the images in order, then the labels: it does not depend on how the work was cut.
    digest = hashlib.blake2b(json.dumps(shape).encode(), digest_size=16)
    offset = 0
    for i, count in zip(order, counts, strict=True):
        labels[offset : offset + count] = np.load(_part(partial, i, "labels"))
        if i not in copied:
            part = np.load(_part(partial, i, "images"))
            images[offset : offset + count] = part
            images.flush()
            append_jsonl(assembled, {"chunk": i})
            _part(partial, i, "images").unlink()
        else:  # copied before an interruption: hashed from images.npy
            part = images[offset : offset + count]
        digest.update(np.ascontiguousarray(part).data)
        offset += count
    del images
    digest.update(labels.data)
    write_atomic(partial / LABELS, lambda tmp: _save_npy(tmp, labels))
    fsync(images_file)
    skipped = [s for i in order for s in records[i]["skipped"]]
    reasons: dict = {}
    for _, reason in skipped:
        kind = reason.split(":")[0]
        reasons[kind] = reasons.get(kind, 0) + 1
    say(f"prepared {total:,} images of {job['resolution']} px" + (f"; skipped {len(skipped)} unreadable image file(s), "
        f"e.g. {quote(skipped[0][0])} ({skipped[0][1]})" if skipped else ""))  # fmt: skip
    return {
        "format": FORMAT, "count": total, "resolution": job["resolution"], "channels": job["channels"],
        "class_names": list(source.class_names), "source": job["source"], "digest": digest.hexdigest(),
        "skipped": {"count": len(skipped), "by_reason": reasons, "files": skipped[:SKIPPED_LISTED]},
        "chunk": job["chunk"], "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip


def _where(source) -> str:
    root = getattr(source, "root", None)
    return f"data.root={quote(str(root))}" if root is not None else f"data.name={source.name}"


def _first_skipped(records: dict) -> str:
    for i in sorted(records):
        if records[i]["skipped"]:
            return records[i]["skipped"][0][0]
    return ""
