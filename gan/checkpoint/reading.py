"""Reading a checkpoint without running code, every file checked before anything of it is used.

Weights are safetensors; state.pt and rng-rankR.pt are read with torch.load(weights_only=True),
which refuses a pickle that would run code. A bad file raises GanError naming it and what is wrong.
"""

import json
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from gan.checkpoint.folders import STEP_DIR, list_checkpoints
from gan.errors import GanError

ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")  # torch.optim.Adam's per-parameter state (amsgrad off)


@dataclass
class Checkpoint:
    path: Path
    meta: dict  # checked by read_meta: step an int, files a list of names, kimg a number

    @property
    def step(self) -> int:
        return self.meta["step"]


def _bad(path: Path, why: str) -> GanError:
    return GanError(f"checkpoint file {str(path)!r} {why}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_meta(path: Path) -> Checkpoint:
    """meta.json, with the type of every field checked and its step equal to the folder's."""
    meta_file = Path(path) / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise _bad(meta_file, "is missing (an incomplete or foreign checkpoint)") from None
    except (OSError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        raise _bad(meta_file, f"cannot be read ({err.__class__.__name__})") from None
    if not isinstance(meta, dict) or "step" not in meta:
        raise _bad(meta_file, "has no step")
    if not _is_int(meta["step"]) or meta["step"] < 0:
        raise _bad(meta_file, f"has step {str(meta['step'])[:40]!r}, not a whole number >= 0")
    folder = STEP_DIR.match(Path(path).name)
    if folder and int(folder.group(1)) != meta["step"]:
        raise _bad(meta_file, f"says step {meta['step']}, its folder is {Path(path).name}")
    files = meta.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise _bad(meta_file, "has a 'files' entry that is not a list of file names")
    kimg = meta.get("kimg")
    if kimg is not None and not (isinstance(kimg, int | float) and not isinstance(kimg, bool)):
        raise _bad(meta_file, "has a 'kimg' entry that is not a number")
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


def network_files(ckpt: Checkpoint) -> dict[str, Path]:
    """The weights files of G, D and G_ema (G_ema's is G's where the run kept none)."""
    return {"G": ckpt.path / "G.safetensors", "D": ckpt.path / "D.safetensors", "G_ema": generator_file(ckpt)}


def load_generator(path: Path, device="cpu"):
    """(G, config, checkpoint) from a run folder or a checkpoint folder; G_ema where there is one.
    Every file it reads is checked first; a bad one raises GanError naming it."""
    from gan.config import from_dict
    from gan.networks import build_networks

    found = resolve_checkpoint(path)
    state = read_state(found.path, found.step, GENERATOR_FIELDS)
    cfg = from_dict(state["config"], source=f"checkpoint file {str(found.path / 'state.pt')!r}")
    G, _ = build_networks(cfg, num_classes=state["num_classes"])
    load_network(G, generator_file(found))
    G.class_counts = class_counts(state)
    return G.to(device).eval(), cfg, found


# state.pt's entries and the types they must have; checked before anything of the file is used.
STATE_FIELDS = {"step": int, "batches_seen": int, "nonfinite_total": int, "opt_G": dict, "opt_D": dict,
                "scaler": dict, "ema_n_averaged": torch.Tensor, "num_processes": int, "num_classes": int,
                "config": dict}  # fmt: skip
GENERATOR_FIELDS = ("step", "num_classes", "config")  # what gan.generate and the evaluator need


def class_counts(state: dict) -> list[int]:
    """The training images per class, which generation draws classes by; [] (uniform) where the
    checkpoint predates them or holds no valid list."""
    counts = state.get("class_counts")
    valid = (isinstance(counts, list) and len(counts) == state["num_classes"] and sum(counts) > 0
             and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts))  # fmt: skip
    return counts if valid else []


def read_state(path: Path, step: int, fields=tuple(STATE_FIELDS)) -> dict:
    """state.pt of the checkpoint at `step`, with the type of each of `fields` checked (not yet the
    optimizers' contents: see check_optimizer_state)."""
    state_file = Path(path) / "state.pt"
    saved = load_plain(state_file)
    if not isinstance(saved, dict):
        raise _bad(state_file, f"holds a {type(saved).__name__}, not the training state")
    for key in fields:
        kind = STATE_FIELDS[key]
        if key not in saved:
            raise _bad(state_file, f"has no {key!r} entry (not a training state of this project)")
        value = saved[key]
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0)):
            raise _bad(state_file, f"has a {key!r} entry of the wrong type or range ({type(value).__name__})")
    if saved["step"] != step:
        raise _bad(state_file, f"says step {saved['step']}, its checkpoint is step {step}")
    if "num_processes" in fields and (saved["num_processes"] < 1 or saved["ema_n_averaged"].numel() != 1):
        raise _bad(state_file, "has a num_processes or ema_n_averaged entry out of range")
    return saved


def check_optimizer_state(saved: dict, optimizer: torch.optim.Optimizer, where: str) -> None:
    """Raise ValueError unless `saved` is Adam state for exactly these parameters: every state tensor
    must have its parameter's shape and dtype. Loading a mismatch can crash the process (a fused
    kernel's internal assert) or silently pair moments with the wrong weights."""
    groups = saved.get("param_groups")
    state = saved.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict):
        raise ValueError(f"{where} is not an optimizer state (no param_groups/state)")
    if len(groups) != len(optimizer.param_groups):
        raise ValueError(f"{where} has {len(groups)} parameter groups, the optimizer {len(optimizer.param_groups)}")
    for saved_group, group in zip(groups, optimizer.param_groups, strict=True):
        ids = saved_group.get("params") if isinstance(saved_group, dict) else None
        if not isinstance(ids, list) or len(ids) != len(group["params"]):
            raise ValueError(f"{where} has a parameter group of another size")
        for index, param in zip(ids, group["params"], strict=True):
            entry = state.get(index)
            if entry is None:  # a parameter that has had no step yet
                continue
            if not isinstance(entry, dict) or sorted(entry) != sorted(ADAM_STATE):
                keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
                raise ValueError(f"{where} holds state {keys} for a parameter, not Adam's {list(ADAM_STATE)}")
            step = entry["step"]
            if not isinstance(step, torch.Tensor) or step.numel() != 1 or not step.is_floating_point():
                raise ValueError(f"{where} holds an Adam step count that is not a scalar float tensor")
            for key in ("exp_avg", "exp_avg_sq"):
                moment = entry[key]
                if not isinstance(moment, torch.Tensor) or moment.shape != param.shape or moment.dtype != param.dtype:
                    raise ValueError(f"{where} holds {key} of {_describe(moment)} for a parameter of {_describe(param)}")
    known = {i for g in groups for i in g["params"]}
    if set(state) - known:
        raise ValueError(f"{where} holds state for parameters it does not list")


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    return f"type {type(value).__name__}"


def read_rng(path: Path, rank: int, device: torch.device) -> dict | None:
    """This rank's RNG states ({"torch": ..., and "cuda" when saved on a GPU}), each checked by setting
    it inside fork_rng (the caller's RNG is untouched); None when the checkpoint has no file for this rank.
    A GPU state is only used, and so only checked, when this process runs on a GPU too."""
    rng_file = Path(path) / f"rng-rank{rank}.pt"
    if not rng_file.exists():
        return None
    saved = load_plain(rng_file)
    states = {k: v for k, v in saved.items() if k in ("torch", "cuda")} if isinstance(saved, dict) else {}
    if not isinstance(states.get("torch"), torch.Tensor):
        raise _bad(rng_file, "has no 'torch' RNG state")
    if device.type != "cuda":
        states.pop("cuda", None)
    if not all(isinstance(state, torch.Tensor) for state in states.values()):
        raise _bad(rng_file, "holds an RNG state that is not a tensor")
    try:
        gpus = [device.index if device.index is not None else torch.cuda.current_device()] if "cuda" in states else []
        with torch.random.fork_rng(devices=gpus):
            torch.set_rng_state(states["torch"])
            if "cuda" in states:
                torch.cuda.set_rng_state(states["cuda"], device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise _bad(rng_file, f"holds an RNG state torch refuses ({str(err).splitlines()[0][:80]})") from None
    return states
