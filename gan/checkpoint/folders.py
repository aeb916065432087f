"""Names and folders under RUN_DIR/checkpoints/: listing, atomic saving, rotation, setting aside.

Only the names defined here are ever created, renamed or deleted under checkpoints/.
"""

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from gan.files import fsync
from gan.run_folder import STEP_NAME, RunFolder, best_lock, best_step, step_name

STEP_DIR = STEP_NAME
BAD_DIR = re.compile(r"^step-(\d{7,})\.bad$")
TMP_PREFIX = ".tmp-"
OUR_TMP_DIR = re.compile(r"^\.tmp-(old-)?step-\d{7,}(\.bad)?$")  # begin_save's and discard's names only


def checkpoints_dir(run_dir: Path) -> Path:
    return RunFolder(Path(run_dir)).checkpoints


def _list(run_dir: Path, pattern: re.Pattern) -> list[tuple[int, Path]]:
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = pattern.match(path.name)
        if match and path.is_dir() and not path.is_symlink():
            found.append((int(match.group(1)), path))
    return sorted(found)


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first. Temporary and set-aside folders are never listed."""
    return _list(run_dir, STEP_DIR)


def list_set_aside(run_dir: Path) -> list[tuple[int, Path]]:
    """Checkpoints that resume skipped as bad (step-N.bad), oldest first."""
    return _list(run_dir, BAD_DIR)


def remove_temporary(run_dir: Path) -> None:
    """Remove what a killed save or discard left behind: our temporary names only, nothing else."""
    root = checkpoints_dir(run_dir)
    if root.is_dir():
        for path in root.iterdir():
            if OUR_TMP_DIR.match(path.name) and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)


def set_aside(path: Path) -> Path:
    """Rename a checkpoint that resume skipped to step-N.bad (replacing an older one of that step)."""
    aside = path.with_name(f"{path.name}.bad")
    if aside.exists():
        discard(aside)
    os.rename(path, aside)
    return aside


def state_dict_for_file(module: torch.nn.Module) -> dict:
    """Contiguous, unshared CPU tensors, as safetensors requires."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def temporary_dir(run_dir: Path, step: int) -> Path:
    """The folder a checkpoint of this step is written into before it is renamed into place."""
    return checkpoints_dir(run_dir) / f"{TMP_PREFIX}{step_name(step)}"


def begin_save(run_dir: Path, step: int) -> Path:
    """Create (afresh) the temporary folder that this step's files go into."""
    tmp = temporary_dir(run_dir, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def save_rng(tmp: Path, rank: int, device: torch.device) -> None:
    """This process's RNG states: the CPU generator's, and on a GPU its device's, which draws the noise
    there. Nothing in training draws from numpy's or Python's global generators, so they are not kept."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    torch.save(states, tmp / f"rng-rank{rank}.pt")


def finish_save(run_dir: Path, tmp: Path, step: int, networks: dict, state: dict, meta: dict) -> Path:
    """Write the networks, state and meta into tmp, then rename it into place atomically."""
    for name, module in networks.items():
        save_file(state_dict_for_file(module), tmp / f"{name}.safetensors")
    torch.save(state, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps({**meta, "files": sorted(p.name for p in tmp.iterdir())}))
    for path in tmp.iterdir():
        fsync(path)
    final = checkpoints_dir(run_dir) / step_name(step)
    if final.exists():  # a checkpoint of this step that was not resumed from: kept aside, not reused
        set_aside(final)
    os.rename(tmp, final)
    fsync(final.parent)
    return final


def rotate(run_dir: Path, keep: int, written: int) -> None:
    """Keep the checkpoint just written (step `written`), the newest keep - 1 others and the one
    best.json names (the evaluator's best FID); of the set-aside (.bad) folders, keep the newest `keep`."""
    with best_lock(run_dir):
        best = best_step(run_dir)
        others = [(step, path) for step, path in list_checkpoints(run_dir) if step not in (written, best)]
        for _, path in others[: max(0, len(others) - (max(keep, 1) - 1))]:
            discard(path)
    aside = list_set_aside(run_dir)
    for _, path in aside[: max(0, len(aside) - max(keep, 1))]:
        discard(path)


def discard(path: Path) -> None:
    """Rename, then delete: a kill -9 part-way leaves a temporary folder, never a half checkpoint."""
    doomed = path.with_name(f"{TMP_PREFIX}old-{path.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
