"""Saving and resuming the training state under Accelerate: what the loop calls.

save() writes a checkpoint (every process its RNG state, the main process the rest, renamed into
place, then rotation); resume() restores the newest checkpoint that every process can read, after
checking every file of it, and sets a bad one aside. The loop's counters are a TrainState.
"""

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import gather_object
from safetensors import SafetensorError

from gan.checkpoint import folders, reading
from gan.config import Config, to_dict
from gan.errors import GanError
from gan.steps import Nets


@dataclass
class TrainState:
    step: int = 0  # generator steps done
    batches_seen: int = 0  # real batches drawn per process: the data position
    nonfinite_in_a_row: int = 0
    nonfinite_total: int = 0


def save(accelerator, run_dir: Path, cfg: Config, nets: Nets, state: TrainState, scheduled: dict | None = None) -> None:
    """All processes store their RNG state; the main process writes the rest and renames.

    A failed write (full disk, quota) removes the temporary folder and stops every process with one
    line: the previous checkpoints are untouched, since nothing is renamed or rotated before the
    new one is complete.
    """
    tmp = folders.temporary_dir(run_dir, state.step)
    error = None
    try:
        if accelerator.is_main_process:
            folders.begin_save(run_dir, state.step)
        accelerator.wait_for_everyone()
        folders.save_rng(tmp, accelerator.process_index, accelerator.device)
    except OSError as err:
        error = f"{err.strerror or err}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and error is None:
        try:
            write_checkpoint(accelerator, run_dir, tmp, cfg, nets, state, scheduled or {})
        except (OSError, SafetensorError, RuntimeError) as err:
            error = str(err).splitlines()[0][:200] if str(err) else err.__class__.__name__
    errors = gather_object([error]) if accelerator.num_processes > 1 else [error]
    failed = next((e for e in errors if e), None)
    if failed:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        previous = folders.list_checkpoints(run_dir)
        kept = f"the newest complete checkpoint, {previous[-1][1]}, is intact" if previous else "no earlier checkpoint"
        raise GanError(f"the checkpoint of step {state.step} could not be written under {str(tmp.parent)!r} "
                       f"(disk full? {failed}); {kept}. Free space and run the same command to resume")  # fmt: skip


def write_checkpoint(accelerator, run_dir: Path, tmp: Path, cfg: Config, nets: Nets, state: TrainState,
                     scheduled: dict) -> None:  # fmt: skip
    """On the main process: the networks, the training state and meta.json, then rotation.

    meta.json records the scheduled values (gan.schedule) at this step; a resume recomputes them
    from the step, and the optimizers' saved state holds the learning rates and betas in use."""
    networks = {"G": accelerator.unwrap_model(nets.G), "D": accelerator.unwrap_model(nets.D)}
    if nets.G_ema is not None:
        networks["G_ema"] = nets.G_ema.module
    scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else {}
    train_state = {
        "step": state.step, "batches_seen": state.batches_seen,
        "nonfinite_total": state.nonfinite_total,
        "opt_G": nets.opt_G.state_dict(), "opt_D": nets.opt_D.state_dict(), "scaler": scaler,
        "ema_n_averaged": nets.G_ema.n_averaged.cpu() if nets.G_ema is not None else torch.zeros(()),
        "num_processes": accelerator.num_processes, "num_classes": nets.num_classes,
        "class_counts": nets.class_counts,
        "lecam": nets.lecam.state.cpu() if nets.lecam is not None else None,
        "config": to_dict(cfg),
    }  # fmt: skip
    kimg = state.step * cfg.train.batch_size * accelerator.num_processes / 1000
    meta = {"step": state.step, "kimg": kimg, "network": cfg.model.network, "has_ema": nets.G_ema is not None,
            "scheduled": scheduled}  # fmt: skip
    folders.finish_save(run_dir, tmp, state.step, networks, train_state, meta)
    folders.rotate(run_dir, cfg.train.keep_checkpoints, written=state.step)


def read_checkpoint(accelerator, path: Path, nets: Nets) -> dict:
    """Every file of a checkpoint, read and checked against this run; nothing is changed yet.

    Raises GanError naming a bad file, so that resume can fall back to an older checkpoint (or a
    fresh start) with networks and optimizers untouched by the bad one.
    """
    meta = reading.read_meta(path)
    modules = {"G": accelerator.unwrap_model(nets.G), "D": accelerator.unwrap_model(nets.D)}
    files = reading.network_files(meta)
    if nets.G_ema is not None:
        modules["G_ema"] = nets.G_ema.module
    tensors = {name: reading.read_network(modules[name], files[name]) for name in modules}
    saved = reading.read_state(path, meta.step)
    state_file = path / "state.pt"
    try:
        reading.check_optimizer_state(saved["opt_G"], nets.opt_G, "opt_G")
        reading.check_optimizer_state(saved["opt_D"], nets.opt_D, "opt_D")
        check_scaler_state(saved["scaler"], accelerator.scaler)
        check_lecam_state(saved.get("lecam"), nets.lecam)
    except ValueError as err:
        raise GanError(f"checkpoint file {str(state_file)!r} does not fit this run ({err})") from None
    state = TrainState(step=saved["step"], batches_seen=saved["batches_seen"], nonfinite_total=saved["nonfinite_total"])
    same_world = saved["num_processes"] == accelerator.num_processes
    rng = reading.read_rng(path, accelerator.process_index, accelerator.device) if same_world else None
    return {"modules": modules, "tensors": tensors, "saved": saved, "state": state, "rng": rng}


def check_lecam_state(saved, lecam) -> None:
    """LeCam's anchors (real, fake, updates), where this run has LeCam on: three finite numbers."""
    valid = isinstance(saved, torch.Tensor) and saved.shape == (3,) and saved.is_floating_point()
    if lecam is not None and not (valid and bool(torch.isfinite(saved).all())):
        raise ValueError("it holds no valid LeCam anchors, and loss.lecam_weight > 0")


def check_scaler_state(saved: dict, scaler) -> None:
    """fp16's GradScaler state: empty (no scaler then), or a finite positive scale and its counters."""
    if scaler is None or not saved:
        return
    scale = saved.get("scale")
    if not isinstance(scale, int | float) or not 0 < scale < float("inf") or not isinstance(
        saved.get("_growth_tracker"), int
    ):
        raise ValueError("scaler holds no finite positive scale")


def load_optimizer(optimizer, saved: dict) -> None:
    """Saved Adam state into an optimizer built now. Only the state and the parameter ids come from
    the file; the hyper-parameters (lr, betas, fused) are the optimizer's own, set from the config
    that resume has checked against the run's."""
    groups = [{**{k: v for k, v in own.items() if k != "params"}, "params": g["params"]}
              for g, own in zip(saved["param_groups"], optimizer.param_groups, strict=True)]  # fmt: skip
    optimizer.load_state_dict({"state": saved["state"], "param_groups": groups})


def apply_checkpoint(accelerator, loaded: dict, nets: Nets) -> TrainState:
    """Restore what read_checkpoint read and checked."""
    for name, module in loaded["modules"].items():
        module.load_state_dict(loaded["tensors"][name], strict=True)
    saved = loaded["saved"]
    load_optimizer(nets.opt_G, saved["opt_G"])
    load_optimizer(nets.opt_D, saved["opt_D"])
    if accelerator.scaler is not None and saved["scaler"]:
        accelerator.scaler.load_state_dict(saved["scaler"])
    if nets.G_ema is not None:
        nets.G_ema.n_averaged.copy_(saved["ema_n_averaged"].reshape(nets.G_ema.n_averaged.shape))
    if nets.lecam is not None:
        nets.lecam.state.copy_(saved["lecam"])
    rng = loaded["rng"]
    if rng is not None:
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], accelerator.device)
    return loaded["state"]


def resume(accelerator, run_dir: Path, nets: Nets) -> TrainState:
    """Continue from the newest complete checkpoint that every process can read.

    A bad one is skipped with a warning and set aside as step-N.bad, so it no longer counts among
    the checkpoints rotation keeps. Leftover temporary folders (from kill -9) are removed first.
    """
    if accelerator.is_main_process:
        folders.remove_temporary(run_dir)
    accelerator.wait_for_everyone()
    for step, path in reversed(folders.list_checkpoints(run_dir)):
        try:
            loaded, error = read_checkpoint(accelerator, path, nets), None
        except GanError as err:
            loaded, error = None, str(err)
        errors = gather_object([error]) if accelerator.num_processes > 1 else [error]
        bad = next((e for e in errors if e), None)
        if bad:  # the same checkpoint on every process, or the processes would diverge
            accelerator.print(f"warning: skipping checkpoint step {step}: {bad}; kept aside as {path.name}.bad",
                              file=sys.stderr)  # fmt: skip
            if accelerator.is_main_process:
                folders.set_aside(path)
            accelerator.wait_for_everyone()
            continue
        state = apply_checkpoint(accelerator, loaded, nets)
        accelerator.print(f"resuming from {path} (step {state.step})")
        return state
    return TrainState()
