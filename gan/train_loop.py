"""The training loop under Accelerate: a D step, then a G step, then bookkeeping, until train.steps.

Runs the same in one process (`python train.py`) and under `accelerate launch` (DDP, one
process per device, mixed precision from Accelerate's own setting).
"""

import hashlib
import json
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, gather_object, set_seed
from safetensors import SafetensorError
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from gan import checkpoint as ckpt
from gan.augment import DiffAugment
from gan.config import Config, to_dict
from gan.data import build_data, make_dataloader, to_float
from gan.errors import EXIT_INTERRUPTED, GanError  # 130: stopped by Ctrl-C, after a checkpoint
from gan.files import write_atomic
from gan.losses import build_loss
from gan.networks import build_networks
from gan.run_folder import open_run_dir
from gan.samples import fixed_noise, generate_images, grid_image, save_grid
from gan.steps import Nets, NonFiniteLoss, d_step, ema_avg_fn, g_step, grad_norm, update_ema
from gan.tracking import RunLogger, WindowMeans, peak_memory_mb

EXIT_PREEMPTED = 75  # stopped by SIGTERM/SIGUSR1 after a checkpoint: requeue and relaunch to resume
EXIT_NONFINITE = 3  # a non-finite loss stopped the run; the last good checkpoint is kept
FINISHED_MARKER = "FINISHED"


@dataclass
class TrainState:
    step: int = 0  # generator steps done
    batches_seen: int = 0  # real batches drawn per process: the data position
    nonfinite_in_a_row: int = 0
    nonfinite_total: int = 0


class StopRequest:
    """SIGTERM/SIGUSR1 and a first Ctrl-C (SIGINT) set a flag: the loop finishes the current step,
    writes a checkpoint and exits. A second Ctrl-C raises KeyboardInterrupt at once; the checkpoint
    being written, if any, stays a temporary folder that the next launch removes."""

    def __init__(self):
        self.signum = 0
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a signal on another process"

    def exit_code(self) -> int:
        """130 for Ctrl-C, as a shell reports it; EXIT_PREEMPTED (requeue) for the scheduler's signals."""
        return EXIT_INTERRUPTED if self.signum == signal.SIGINT else EXIT_PREEMPTED

    def agreed(self, accelerator) -> bool:
        """True on every process as soon as any process was signalled (one all-reduce under DDP)."""
        if accelerator.num_processes == 1:
            return self.signum != 0  # no device tensor: no host sync in a one-process step
        flag = torch.tensor(float(self.signum != 0), device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum"))


# --------------------------------------------------------------------------- set-up


def build_nets(cfg: Config, num_classes: int, accelerator, loader):
    G, D = build_networks(cfg, num_classes)
    G_ema = None
    if cfg.train.ema_decay is not None:
        average = ema_avg_fn(cfg.train.ema_decay, cfg.train.ema_rampup)
        G_ema = AveragedModel(G, multi_avg_fn=average, use_buffers=True)
        G_ema.requires_grad_(False)
    # fused: one kernel per parameter group on CPU and CUDA (bench/run.py measured it; see README)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=tuple(cfg.optim.betas), fused=True)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_d, betas=tuple(cfg.optim.betas), fused=True)
    G, D, opt_G, opt_D, loader = accelerator.prepare(G, D, opt_G, opt_D, loader)
    if G_ema is not None:
        G_ema.to(accelerator.device)
    z_dim = accelerator.unwrap_model(G).z_dim
    augment = DiffAugment(cfg.augment.policy)
    return Nets(G, D, G_ema, opt_G, opt_D, z_dim=z_dim, num_classes=num_classes, augment=augment), loader


def real_batches(loader, accelerator, batches_seen: int):
    """Endless batches continuing from the data position; epoch e is shuffled with seed + e."""
    epoch, offset = divmod(batches_seen, len(loader))
    while True:
        epoch_loader = accelerator.skip_first_batches(loader, offset) if offset else loader
        epoch_loader.set_epoch(epoch)
        yield from epoch_loader
        epoch, offset = epoch + 1, 0


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(accelerator, run_dir: Path, cfg: Config, nets: Nets, state: TrainState) -> None:
    """All processes store their RNG state; the main process writes the rest and renames.

    A failed write (full disk, quota) removes the temporary folder and stops every process with one
    line: the previous checkpoints are untouched, since nothing is renamed or rotated before the
    new one is complete.
    """
    tmp = ckpt.checkpoints_dir(run_dir) / f"{ckpt.TMP_PREFIX}{ckpt.step_name(state.step)}"
    error = None
    try:
        if accelerator.is_main_process:
            ckpt.begin_save(run_dir, state.step)
        accelerator.wait_for_everyone()
        ckpt.save_rng(tmp, accelerator.process_index)
    except OSError as err:
        error = f"{err.strerror or err}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and error is None:
        try:
            write_checkpoint(accelerator, run_dir, tmp, cfg, nets, state)
        except (OSError, SafetensorError, RuntimeError) as err:
            error = str(err).splitlines()[0][:200] if str(err) else err.__class__.__name__
    errors = gather_object([error]) if accelerator.num_processes > 1 else [error]
    failed = next((e for e in errors if e), None)
    if failed:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        previous = ckpt.list_checkpoints(run_dir)
        kept = f"the newest complete checkpoint, {previous[-1][1]}, is intact" if previous else "no earlier checkpoint"
        raise GanError(f"the checkpoint of step {state.step} could not be written under {str(tmp.parent)!r} "
                       f"(disk full? {failed}); {kept}. Free space and run the same command to resume")  # fmt: skip


def write_checkpoint(accelerator, run_dir: Path, tmp: Path, cfg: Config, nets: Nets, state: TrainState) -> None:
    """On the main process: the networks, the training state and meta.json, then rotation."""
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
        "config": to_dict(cfg),
    }  # fmt: skip
    kimg = state.step * cfg.train.batch_size * accelerator.num_processes / 1000
    meta = {"step": state.step, "kimg": kimg, "network": cfg.model.network, "has_ema": nets.G_ema is not None}
    ckpt.finish_save(run_dir, tmp, state.step, networks, train_state, meta)
    ckpt.rotate(run_dir, cfg.train.keep_checkpoints, written=state.step)


def read_checkpoint(accelerator, path: Path, nets: Nets) -> dict:
    """Every file of a checkpoint, read and checked against this run; nothing is changed yet.

    Raises GanError naming a bad file, so that resume can fall back to an older checkpoint (or a
    fresh start) with networks and optimizers untouched by the bad one.
    """
    meta = ckpt.read_meta(path)
    modules = {"G": accelerator.unwrap_model(nets.G), "D": accelerator.unwrap_model(nets.D)}
    files = {"G": path / "G.safetensors", "D": path / "D.safetensors"}
    if nets.G_ema is not None:
        modules["G_ema"], files["G_ema"] = nets.G_ema.module, ckpt.generator_file(meta)
    tensors = {name: ckpt.read_network(modules[name], files[name]) for name in modules}
    saved = ckpt.read_state(path, meta.step)
    state_file = path / "state.pt"
    try:
        ckpt.check_optimizer_state(saved["opt_G"], nets.opt_G, "opt_G")
        ckpt.check_optimizer_state(saved["opt_D"], nets.opt_D, "opt_D")
        check_scaler_state(saved["scaler"], accelerator.scaler)
    except ValueError as err:
        raise GanError(f"checkpoint file {str(state_file)!r} does not fit this run ({err})") from None
    state = TrainState(step=saved["step"], batches_seen=saved["batches_seen"], nonfinite_total=saved["nonfinite_total"])
    same_world = saved["num_processes"] == accelerator.num_processes
    rng = ckpt.read_rng(path, accelerator.process_index) if same_world else None
    return {"modules": modules, "tensors": tensors, "saved": saved, "state": state, "rng": rng}


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
    if loaded["rng"] is not None:
        torch.set_rng_state(loaded["rng"])
    return loaded["state"]


def resume(accelerator, run_dir: Path, nets: Nets) -> TrainState:
    """Continue from the newest complete checkpoint that every process can read.

    A bad one is skipped with a warning and set aside as step-N.bad, so it no longer counts among
    the checkpoints rotation keeps. Leftover temporary folders (from kill -9) are removed first.
    """
    if accelerator.is_main_process:
        ckpt.remove_temporary(run_dir)
    accelerator.wait_for_everyone()
    for step, path in reversed(ckpt.list_checkpoints(run_dir)):
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
                ckpt.set_aside(path)
            accelerator.wait_for_everyone()
            continue
        state = apply_checkpoint(accelerator, loaded, nets)
        accelerator.print(f"resuming from {path} (step {state.step})")
        return state
    return TrainState()


# --------------------------------------------------------------------------- the loop


def check_fits(cfg: Config, data, num_processes: int) -> None:
    """Errors that need the data or the networks, raised before the run folder is touched."""
    with torch.random.fork_rng(devices=[]):  # building the networks here must not move the seeded RNG
        build_networks(cfg, data.num_classes)  # e.g. an image size the network cannot produce
    if len(data.images) < cfg.train.batch_size * num_processes:
        raise GanError(f"train.batch_size={cfg.train.batch_size} x {num_processes} process(es) is larger than "
                       f"the data set ({len(data.images)} images)")  # fmt: skip


def train(cfg: Config, run_dir: Path) -> int:
    """Train until cfg.train.steps; returns the process exit code."""
    accelerator = Accelerator(
        log_with="wandb",
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.train.seed),
    )
    set_seed(cfg.train.seed, device_specific=True)  # each process: seed + rank
    set_tf32(cfg.train.tf32)
    data = build_data(cfg)  # before the run folder is touched: bad data leaves no trace
    check_fits(cfg, data, accelerator.num_processes)
    lock = open_run_dir(run_dir, cfg) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    stop = StopRequest()
    try:
        return _train(cfg, run_dir, accelerator, stop, data)
    finally:
        if lock is not None:
            lock.release()
        accelerator.state.destroy_process_group()  # before interpreter exit: gloo can abort a process that keeps it


def set_tf32(enabled: bool) -> None:
    """TF32 for fp32 matmuls and convolutions on NVIDIA GPUs; PyTorch's own switches, read by CUDA only."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def _train(cfg: Config, run_dir: Path, accelerator, stop: StopRequest, data) -> int:
    if cfg.data.on_device:  # a GPU indexes its own copy: batches need no host-to-device copy
        data = data.to(accelerator.device)
    loader = make_dataloader(data, cfg.train.batch_size)
    nets, loader = build_nets(cfg, data.num_classes, accelerator, loader)  # check_fits: len(loader) > 0
    loss_fn = build_loss(cfg)
    state = resume(accelerator, run_dir, nets)
    logger = RunLogger(accelerator, run_dir, cfg)
    means = WindowMeans(accelerator.device)
    sample_z, sample_labels = fixed_noise(cfg.train.num_samples, nets.z_dim, cfg.train.seed, data.num_classes)
    batches = real_batches(loader, accelerator, state.batches_seen)
    images_per_step = cfg.train.batch_size * accelerator.num_processes
    progress = tqdm(total=cfg.train.steps, initial=state.step, disable=not accelerator.is_main_process,
                    unit="step", dynamic_ncols=True)  # fmt: skip
    window_start = time.perf_counter()
    exit_code = 0

    try:  # the bar is closed on every way out, so an error line starts on a line of its own
        while state.step < cfg.train.steps:
            try:
                for _ in range(cfg.train.n_critic):  # each D step draws its own real batch
                    real_uint8, labels = next(batches)
                    d_steps_done, state.batches_seen = state.batches_seen, state.batches_seen + 1
                    stats = d_step(nets, loss_fn, to_float(real_uint8), labels, accelerator, d_steps_done)
                stats |= g_step(nets, loss_fn, len(real_uint8), labels, accelerator)  # the last batch's labels
            except NonFiniteLoss as err:
                exit_code = handle_nonfinite(cfg, state, err, accelerator)
                if exit_code:
                    break
                continue
            state.nonfinite_in_a_row = 0
            update_ema(nets, accelerator)
            state.step += 1
            if state.step % cfg.train.log_every == 0:  # the window's last step: norms every step cost ~10% (bench)
                stats |= {"grad_norm/G": grad_norm(nets.G), "grad_norm/D": grad_norm(nets.D)}
            means.update(stats)
            progress.update(1)

            if state.step % cfg.train.log_every == 0:
                elapsed, window_start = time.perf_counter() - window_start, time.perf_counter()
                log_window(logger, means, state, cfg, accelerator, nets, progress, elapsed, images_per_step)
            if state.step % cfg.train.sample_every == 0 or state.step == cfg.train.steps:
                save_samples(logger, run_dir, nets, accelerator, sample_z, sample_labels, state.step)
            stopping = stop.agreed(accelerator)
            if state.step % cfg.train.checkpoint_every == 0 or state.step == cfg.train.steps or stopping:
                save_checkpoint(accelerator, run_dir, cfg, nets, state)
            if stopping:
                exit_code = stop.exit_code()
                then = "to be requeued" if exit_code == EXIT_PREEMPTED else "(run the same command to resume)"
                accelerator.print(f"{stop.name()}: checkpoint written at step {state.step}; "
                                  f"exiting with code {exit_code} {then}")  # fmt: skip
                if exit_code == EXIT_PREEMPTED:
                    logger.mark_preempting()
                break
    finally:
        progress.close()
    if accelerator.num_processes > 1:
        check_replicas(accelerator, nets, run_dir)
    if exit_code == 0 and accelerator.is_main_process:
        write_atomic(run_dir / FINISHED_MARKER, f"{state.step}\n")
    logger.close()
    accelerator.wait_for_everyone()  # on a stop, no process exits before the W&B run is closed
    return exit_code


def check_replicas(accelerator, nets: Nets, run_dir: Path) -> None:
    """DDP keeps G's and D's parameters identical on every rank; record a digest per rank, fail loudly if not.

    BatchNorm running statistics are not compared: each rank updates them from its own shard after
    DDP broadcasts rank 0's at the start of every forward; checkpoints store rank 0's.
    """
    digest = hashlib.sha1()
    for module in (accelerator.unwrap_model(nets.G), accelerator.unwrap_model(nets.D)):
        for tensor in module.parameters():
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digests = gather_object([digest.hexdigest()])
    if accelerator.is_main_process:
        write_atomic(run_dir / "replicas.json", json.dumps({"rank_digests": digests}) + "\n")
        if len(set(digests)) != 1:
            raise RuntimeError(f"G/D parameters differ across ranks: {digests}")


def handle_nonfinite(cfg: Config, state: TrainState, err: NonFiniteLoss, accelerator) -> int:
    """train.on_nonfinite: stop at once (keeping the last good checkpoint), or drop the update."""
    state.nonfinite_total += 1
    state.nonfinite_in_a_row += 1
    where = f"non-finite {err.which} at step {state.step + 1}"
    if cfg.train.on_nonfinite == "stop":
        accelerator.print(f"error: {where}; stopping (train.on_nonfinite=stop), the last checkpoint is kept",
                          file=sys.stderr)  # fmt: skip
        return EXIT_NONFINITE
    if state.nonfinite_in_a_row >= cfg.train.max_nonfinite_skips:
        accelerator.print(f"error: {where}: {state.nonfinite_in_a_row} skipped updates in a row "
                          f"(train.max_nonfinite_skips); stopping", file=sys.stderr)  # fmt: skip
        return EXIT_NONFINITE
    accelerator.print(f"warning: {where}; update dropped ({state.nonfinite_total} so far)")
    return 0


def log_window(logger, means, state, cfg, accelerator, nets, progress, elapsed, images_per_step) -> None:
    values = means.compute()  # every process: mean over the window and across processes
    values |= {
        "train/kimg": state.step * images_per_step / 1000,
        "train/img_per_s": cfg.train.log_every * images_per_step / max(elapsed, 1e-9),
        "lr/G": nets.opt_G.param_groups[0]["lr"],
        "lr/D": nets.opt_D.param_groups[0]["lr"],
        "train/nonfinite_skips": state.nonfinite_total,
    }
    memory = peak_memory_mb(accelerator.device)
    if memory is not None:
        values["memory/peak_mb"] = memory
    logger.log_scalars(values, state.step)
    progress.set_postfix({"img/s": f"{values['train/img_per_s']:.0f}", "D": f"{values['loss/D']:.3f}",
                          "G": f"{values['loss/G']:.3f}"}, refresh=False)  # fmt: skip


def save_samples(logger, run_dir: Path, nets: Nets, accelerator, z, labels, step: int) -> None:
    """The fixed-noise grid from G_ema (or G), on the main process."""
    if not accelerator.is_main_process:
        return
    G = nets.G_ema.module if nets.G_ema is not None else accelerator.unwrap_model(nets.G)
    images = generate_images(G, z, labels)
    save_grid(images, run_dir / "samples" / f"{ckpt.step_name(step)}.png")
    logger.log_image("samples", grid_image(images), step)
