"""Checkpoints that survive kill -9 and load without executing code.

Layout of `RUN_DIR/checkpoints/step-NNNNNNN/`:
  G.safetensors, D.safetensors, G_ema.safetensors  network weights (safetensors: no pickle)
  state.pt          step, data position, optimizers, scaler, EMA count, resolved config:
                    plain tensors and containers, read with torch.load(weights_only=True)
  rng-rankR.pt      each process's torch RNG state
  meta.json         step, kimg and which files exist; written last

Everything is written into `.tmp-step-NNNNNNN/` and renamed into place, so a crash leaves
either the old set or a complete new one. Leftover temporary folders are ignored and removed.
Accelerate's `save_state` pickles RNG and sampler objects, so we do not use it here.
"""

import json
import os
import pickle
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gan.errors import GanError

STEP_DIR = re.compile(r"^step-(\d{7,})$")
TMP_PREFIX = ".tmp-"
NETWORK_FILES = ("G", "D", "G_ema")


def step_name(step: int) -> str:
    return f"step-{step:07d}"


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first. Temporary folders are never listed."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = STEP_DIR.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def remove_temporary(run_dir: Path) -> None:
    root = checkpoints_dir(run_dir)
    if root.is_dir():
        for path in root.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(path, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- saving


def state_dict_for_file(module: torch.nn.Module) -> dict:
    """Contiguous, unshared CPU tensors, as safetensors requires."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def begin_save(run_dir: Path, step: int) -> Path:
    """Create (afresh) the temporary folder that this step's files go into."""
    tmp = checkpoints_dir(run_dir) / f"{TMP_PREFIX}{step_name(step)}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def save_rng(tmp: Path, rank: int) -> None:
    torch.save({"torch": torch.get_rng_state()}, tmp / f"rng-rank{rank}.pt")


def finish_save(run_dir: Path, tmp: Path, step: int, networks: dict, state: dict, meta: dict) -> Path:
    """Write the networks, state and meta into tmp, then rename it into place atomically."""
    for name, module in networks.items():
        save_file(state_dict_for_file(module), tmp / f"{name}.safetensors")
    torch.save(state, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps({**meta, "files": sorted(p.name for p in tmp.iterdir())}))
    for path in tmp.iterdir():
        _fsync(path)
    final = checkpoints_dir(run_dir) / step_name(step)
    if final.exists():  # a checkpoint of this step that resume skipped as bad: kept aside, not reused
        aside = final.with_name(f"{final.name}.bad")
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(final, aside)
    os.rename(tmp, final)
    _fsync(final.parent)
    return final


def rotate(run_dir: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; the newest is never deleted."""
    complete = list_checkpoints(run_dir)
    for _, path in complete[: max(0, len(complete) - max(keep, 1))]:
        discard(path)


def discard(path: Path) -> None:
    """Rename, then delete: a kill -9 part-way leaves a temporary folder, never a half checkpoint."""
    doomed = path.with_name(f"{TMP_PREFIX}old-{path.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


# --------------------------------------------------------------------------- loading


@dataclass
class Checkpoint:
    path: Path
    meta: dict

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def _bad(path: Path, why: str) -> GanError:
    return GanError(f"checkpoint file {str(path)!r} {why}")


def read_meta(path: Path) -> Checkpoint:
    meta_file = Path(path) / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise _bad(meta_file, "is missing (an incomplete or foreign checkpoint)") from None
    except (OSError, ValueError) as err:
        raise _bad(meta_file, f"cannot be read ({err.__class__.__name__})") from None
    if not isinstance(meta, dict) or "step" not in meta:
        raise _bad(meta_file, "has no step")
    return Checkpoint(Path(path), meta)


def load_tensors(path: Path) -> dict:
    """A safetensors file; anything else (a pickle, a truncated file) is refused."""
    try:
        return load_file(path)
    except FileNotFoundError:
        raise _bad(path, "is missing") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        if _looks_pickled(path):
            raise _bad(path, "holds a pickle (torch.save) payload, not safetensors; refused, nothing was run") from None
        raise _bad(path, f"is not a valid safetensors file ({str(err).splitlines()[0][:120]})") from None


def _looks_pickled(path: Path) -> bool:
    """A pickle starts with PROTO (0x80, 2..5) and an opcode; torch.save's zip archive with PK.
    (A safetensors file starts with its header length, whose third byte is 0 for any real header.)"""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return (len(head) == 4 and head[0] == 0x80 and 2 <= head[1] <= 5 and head[2] != 0) or head == b"PK\x03\x04"


def load_plain(path: Path) -> dict:
    """A torch file of plain tensors and containers; a pickle that would run code is refused."""
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a file it then refuses
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise _bad(path, "is missing") from None
    except Exception as err:  # UnpicklingError for a payload; RuntimeError/EOFError/... for a truncated file
        text = str(err)
        if isinstance(err, pickle.UnpicklingError) and "truncated" not in text:
            found = re.search(r"(?i)unsupported (?:GLOBAL [\w.]+|[^\n]{0,60})", text)
            detail = f" ({found.group(0).strip()[:100]})" if found else ""
            raise _bad(path, f"holds a pickle payload that is not plain tensors and containers{detail}; "
                             "refused, nothing was run") from None  # fmt: skip
        raise _bad(path, f"is corrupt or truncated ({err.__class__.__name__}); refused") from None


def read_network(module: torch.nn.Module, path: Path) -> dict:
    """The tensors of a safetensors file, checked against module's names and shapes; module is unchanged."""
    tensors = load_tensors(path)
    expected = module.state_dict()
    problems = [f"missing {k}" for k in expected if k not in tensors]
    problems += [f"unexpected {k}" for k in tensors if k not in expected]
    problems += [f"{k} has shape {tuple(tensors[k].shape)}, the network's is {tuple(v.shape)}"
                 for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]  # fmt: skip
    if problems:
        more = f" and {len(problems) - 2} more" if len(problems) > 2 else ""
        raise _bad(path, f"does not fit the configured network ({'; '.join(problems[:2])}{more})")
    return tensors


def load_network(module: torch.nn.Module, path: Path) -> None:
    module.load_state_dict(read_network(module, path), strict=True)


def resolve_checkpoint(path: Path) -> Checkpoint:
    """A run folder (its newest complete checkpoint) or one checkpoint folder."""
    path = Path(path)
    if not path.exists():
        raise GanError(f"{str(path)!r} does not exist; give a run folder or a checkpoints/step-NNNNNNN folder")
    if (path / "meta.json").exists() or STEP_DIR.match(path.name):
        return read_meta(path)
    complete = list_checkpoints(path)
    if not complete:
        raise GanError(f"run folder {str(path)!r} has no complete checkpoint under checkpoints/")
    return read_meta(complete[-1][1])


def generator_file(ckpt: Checkpoint) -> Path:
    """G_ema where the run has one, else G."""
    ema = ckpt.path / "G_ema.safetensors"
    return ema if "G_ema.safetensors" in ckpt.meta.get("files", []) or ema.exists() else ckpt.path / "G.safetensors"
