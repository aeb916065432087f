"""Read an offline W&B run back from its .wandb file (wandb has no public offline reader).

The file is LevelDB-log framed: a 7-byte header (":W&B", 0xBEE1, version), then 32 KiB blocks of
chunks, each with a 7-byte header (crc32c, length, type FULL=1/FIRST=2/MIDDLE=3/LAST=4). Each
reassembled payload is a wandb_internal_pb2.Record.
"""

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path: Path):
    data = Path(path).read_bytes()
    magic, ident, version = struct.unpack("<4sHB", data[:HEADER])
    assert magic == b":W&B" and ident == 0xBEE1, f"{path} is not a .wandb file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # the block's tail is padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""
        elif kind == 0 and length == 0:
            break  # zero-filled tail


def records(path: Path):
    from wandb.proto import wandb_internal_pb2

    for payload in payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def history(path: Path) -> list[dict]:
    """Each history row as {key: decoded JSON value}."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})  # fmt: skip
    return rows


def run_info(path: Path) -> dict:
    """The run record (id, group, tags, sweep id) with the config from every config record."""
    info = {"config": {}}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            info.update(id=run.run_id, group=run.run_group, tags=list(run.tags), sweep=run.sweep_id)
            info["config"].update({item.key: json.loads(item.value_json) for item in run.config.update})
        elif kind == "config":
            info["config"].update({item.key: json.loads(item.value_json) for item in record.config.update})
    info["config"].pop("_wandb", None)
    return info


def wandb_files(run_dir: Path) -> list[Path]:
    return sorted(Path(run_dir, "wandb").glob("offline-run-*/run-*.wandb"))


def metric_summaries(path: Path) -> dict[str, list[str]]:
    """{metric name: the summaries define_metric asked for (min, max, ...)}, from the metric records."""
    summaries = {}
    for record in records(path):
        if record.WhichOneof("record_type") == "metric" and record.metric.HasField("summary"):
            kinds = [f.name for f, on in record.metric.summary.ListFields() if on is True]
            summaries.setdefault(record.metric.name, []).extend(kinds)
    return summaries


def artifacts(path: Path) -> list[dict]:
    """Each logged artifact: name, type, aliases and the paths of its files."""
    found = []
    for record in records(path):
        if record.WhichOneof("record_type") == "artifact":
            art = record.artifact
            found.append({"name": art.name, "type": art.type, "aliases": list(art.aliases),
                          "files": sorted(entry.path for entry in art.manifest.contents)})  # fmt: skip
    return found
