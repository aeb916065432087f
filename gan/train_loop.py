"""The training loop under Accelerate: a D step, then a G step, then bookkeeping, until train.steps.

Runs the same in one process (`python train.py`) and under `accelerate launch` (DDP, one
process per device, mixed precision from Accelerate's own setting).
"""

import hashlib
import json
import signal
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, gather_object, set_seed
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from gan.augment import DiffAugment
from gan.checkpoint import training as ckpt
from gan.checkpoint import warm_start
from gan.checkpoint.folders import list_checkpoints
from gan.checkpoint.training import TrainState
from gan.config import Config
from gan.data import build_data, data_source, make_dataloader, place_data, to_float
from gan.errors import EXIT_INTERRUPTED, EXIT_NONFINITE, EXIT_PREEMPTED, GanError
from gan.files import write_atomic
from gan.losses import LeCamAnchors, build_loss
from gan.networks import build_networks
from gan.networks._resolutions import check_resolution
from gan.pseudo_labels import check_clusters, class_counts, pseudo_label
from gan.run_folder import RunFolder, open_run_dir
from gan.samples import fixed_noise, generate_images, grid_image, save_grid
from gan.schedule import Schedule
from gan.steps import EmaRate, Nets, NonFiniteLoss, compile_networks, d_step, g_step, grad_norm, update_ema
from gan.trackers import accelerator_options
from gan.tracking import RunLogger, WindowMeans, peak_memory_mb

SCHEDULER_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # a stop to requeue after (EXIT_PREEMPTED)


class StopRequest:
    """SIGTERM/SIGUSR1 and a first Ctrl-C (SIGINT) set a flag: the loop finishes the current step,
    writes a checkpoint and exits. A second Ctrl-C raises KeyboardInterrupt at once; the checkpoint
    being written, if any, stays a temporary folder that the next launch removes."""

    def __init__(self):
        self.signum = 0
        for sig in (*SCHEDULER_SIGNALS, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.signum = self.signum or signum

    def honoured(self) -> None:
        """The stop's checkpoint is written: SIGTERM and SIGUSR1 are ignored from now on. Python puts the
        default handlers back while it shuts down, so one more arriving then (a scheduler or a user
        signalling again) would kill the process by the signal instead of letting it exit 75."""
        for sig in SCHEDULER_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

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
    G_ema, ema_rate = None, None
    if cfg.train.ema_decay is not None or cfg.train.ema_kimg is not None:
        images_per_step = cfg.train.batch_size * accelerator.num_processes
        ema_rate = EmaRate(cfg.train.ema_decay, cfg.train.ema_rampup, cfg.train.ema_kimg, images_per_step)
        G_ema = AveragedModel(G, multi_avg_fn=ema_rate.avg_fn(), use_buffers=True)
        G_ema.requires_grad_(False)
    cudagraphs = compile_networks(cfg.train.compile, (G, D), accelerator.device, accelerator.print)  # G_ema stays eager
    # fused: one kernel per parameter group on CPU and CUDA (docs/performance.md)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=tuple(cfg.optim.betas), fused=True)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_d, betas=tuple(cfg.optim.betas), fused=True)
    G, D, opt_G, opt_D, loader = accelerator.prepare(G, D, opt_G, opt_D, loader)
    if G_ema is not None:
        G_ema.to(accelerator.device)
    z_dim = accelerator.unwrap_model(G).z_dim
    augment = DiffAugment(cfg.augment.policy, cfg.augment.p)
    lecam = LeCamAnchors(cfg.loss.lecam_decay, accelerator.device) if cfg.loss.lecam_weight > 0 else None
    nets = Nets(G, D, G_ema, opt_G, opt_D, z_dim=z_dim, num_classes=num_classes, augment=augment, ema_rate=ema_rate,
                cudagraphs=cudagraphs, lecam=lecam)  # fmt: skip
    return nets, loader


def real_batches(loader, accelerator, batches_seen: int):
    """Endless batches continuing from the data position; epoch e is shuffled with seed + e."""
    epoch, offset = divmod(batches_seen, len(loader))
    while True:
        epoch_loader = accelerator.skip_first_batches(loader, offset) if offset else loader
        epoch_loader.set_epoch(epoch)
        yield from epoch_loader
        epoch, offset = epoch + 1, 0


# --------------------------------------------------------------------------- the loop


def check_networks(cfg: Config, num_classes: int, run_dir: Path) -> None:
    """Errors the networks raise (e.g. an image size they cannot produce), and a train.init_from whose
    weights do not fit them, before any image is read. A run that has checkpoints resumes from its
    own, so its init_from is not read."""
    with torch.random.fork_rng(devices=[]):  # building the networks here must not move the seeded RNG
        G, D = build_networks(cfg, num_classes)
    if cfg.train.init_from and not list_checkpoints(run_dir):
        warm_start.check(cfg.train.init_from, G, D)


def check_accumulation(accelerator) -> None:
    """Gradient accumulation is refused, not ignored: each D and G step takes one batch per process."""
    steps = accelerator.gradient_accumulation_steps
    if steps > 1:
        raise GanError(f"gradient accumulation ({steps} steps, from accelerate launch --gradient_accumulation_steps "
                       "or ACCELERATE_GRADIENT_ACCUMULATION_STEPS) is not supported: with BatchNorm in G and D, "
                       "micro-batches are not one large batch; set it to 1 and raise train.batch_size, or add "
                       "processes")  # fmt: skip


def check_batch(cfg: Config, data, num_processes: int) -> None:
    if len(data) < cfg.train.batch_size * num_processes:
        raise GanError(f"train.batch_size={cfg.train.batch_size} x {num_processes} process(es) is larger than "
                       f"the data set ({len(data)} images)")  # fmt: skip


def train(cfg: Config, run_dir: Path) -> int:
    """Train until cfg.train.steps; returns the process exit code."""
    accelerator = Accelerator(
        **accelerator_options(cfg, run_dir),  # tracking.backend's tracker; TensorBoard writes into the run folder
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.train.seed, non_blocking=True),
    )
    check_accumulation(accelerator)
    set_seed(cfg.train.seed, device_specific=True)  # each process: seed + rank
    set_tf32(cfg.train.tf32)
    # before the run folder is touched: bad data leaves no trace
    check_resolution(cfg)  # from the networks' layouts: builds nothing, reads nothing
    source = data_source(cfg.data)
    check_networks(cfg, cfg.data.pseudo_labels or source.num_classes, run_dir)
    data = build_data(cfg, source, first=accelerator.local_main_process_first)  # says so if it prepares
    check_batch(cfg, data, accelerator.num_processes)
    check_clusters(cfg.data.pseudo_labels, len(data))
    lock = open_run_dir(run_dir, cfg) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    stop = StopRequest()
    try:
        if cfg.data.pseudo_labels:
            data = pseudo_label(data, cfg.data.pseudo_labels, cfg.train.seed, RunFolder(run_dir).pseudo_labels,
                                accelerator.is_main_process, accelerator.wait_for_everyone, accelerator.print)  # fmt: skip
        return run_training(cfg, run_dir, accelerator, stop, data)
    finally:
        if lock is not None:
            lock.release()
        accelerator.state.destroy_process_group()  # before interpreter exit: gloo can abort a process that keeps it


def set_tf32(enabled: bool) -> None:
    """TF32 for fp32 matmuls and convolutions on NVIDIA GPUs; PyTorch's own switches, read by CUDA only."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def run_training(cfg: Config, run_dir: Path, accelerator, stop: StopRequest, data) -> int:
    data, pin = place_data(data, accelerator.device, cfg.data.on_device, say=accelerator.print)
    loader = make_dataloader(data, cfg.train.batch_size, pin_memory=pin)
    nets, loader = build_nets(cfg, data.num_classes, accelerator, loader)  # check_batch: len(loader) > 0
    nets.class_counts = class_counts(data.labels, data.num_classes)
    loss_fn = build_loss(cfg)
    state = ckpt.resume(accelerator, run_dir, nets)
    if state.step == 0 and cfg.train.init_from:
        G, D = accelerator.unwrap_model(nets.G), accelerator.unwrap_model(nets.D)
        source = warm_start.apply(cfg.train.init_from, G, D, nets.G_ema)
        accelerator.print(f"train.init_from: G, D and G_ema start from {source} (fresh optimizers, step 0)")
    logger = RunLogger(accelerator, run_dir, cfg)
    means = WindowMeans(accelerator.device)
    sample_z, sample_labels = fixed_noise(cfg.train.num_samples, nets.z_dim, cfg.train.seed, data.num_classes)
    batches = real_batches(loader, accelerator, state.batches_seen)
    images_per_step = cfg.train.batch_size * accelerator.num_processes
    schedule = Schedule(cfg, images_per_step)
    progress = training_bar(cfg.train.steps, state.step, accelerator.is_main_process)
    window_start = time.perf_counter()
    exit_code = 0

    try:  # the bar is closed on every way out, so an error line starts on a line of its own
        while state.step < cfg.train.steps:
            scheduled = schedule.apply(state.step, nets, loss_fn)
            try:
                for _ in range(cfg.train.n_critic):  # each D step draws its own real batch
                    real_uint8, labels = next(batches)
                    d_steps_done, state.batches_seen = state.batches_seen, state.batches_seen + 1
                    real = to_float(real_uint8)
                    stats = d_step(nets, loss_fn, real, labels, accelerator, d_steps_done)
                # G's step takes the last real batch's labels (generated image i gets real image i's class)
                # and, for a relativistic loss, its images: the data position counts D's batches only.
                # R3GAN's own loop draws G a fresh batch; both are uniform draws from the data.
                g_real = real if loss_fn.g_needs_real else None
                stats |= g_step(nets, loss_fn, len(real), labels, accelerator, g_real)
            except NonFiniteLoss as err:
                exit_code = handle_nonfinite(cfg, state, err, accelerator)
                if exit_code:
                    break
                continue
            state.nonfinite_in_a_row = 0
            update_ema(nets, accelerator)
            state.step += 1
            if state.step % cfg.train.log_every == 0:  # the window's last step: a norm costs a pass over every gradient
                stats |= {"grad_norm/G": grad_norm(nets.G), "grad_norm/D": grad_norm(nets.D)}
            means.update(stats)
            progress.update(1)

            if state.step % cfg.train.log_every == 0:
                elapsed, window_start = time.perf_counter() - window_start, time.perf_counter()
                scheduled_log = {f"sched/{name}": scheduled[name] for name in schedule.ramped() if name in scheduled}
                log_window(logger, means, state, cfg, accelerator, nets, progress, elapsed, images_per_step,
                           scheduled_log)  # fmt: skip
            if state.step % cfg.train.sample_every == 0 or state.step == cfg.train.steps:
                save_samples(logger, run_dir, nets, accelerator, sample_z, sample_labels, state.step)
            stopping = stop.agreed(accelerator)
            if state.step % cfg.train.checkpoint_every == 0 or state.step == cfg.train.steps or stopping:
                ckpt.save(accelerator, run_dir, cfg, nets, state, schedule.values(state.step))
                logger.log_checkpoint(RunFolder(run_dir).checkpoint(state.step))
            if stopping:
                exit_code = stop.exit_code()
                then = "to be requeued" if exit_code == EXIT_PREEMPTED else "(run the same command to resume)"
                accelerator.print(f"{stop.name()}: checkpoint written at step {state.step}; "
                                  f"exiting with code {exit_code} {then}")  # fmt: skip
                stop.honoured()
                if exit_code == EXIT_PREEMPTED:
                    logger.mark_preempting()
                break
    finally:
        progress.close()
    if accelerator.num_processes > 1:
        check_replicas(accelerator, nets, run_dir)
    if exit_code == 0 and accelerator.is_main_process:
        write_atomic(RunFolder(run_dir).finished, f"{state.step}\n")
    logger.close()
    accelerator.wait_for_everyone()  # on a stop, no process exits before the W&B run is closed
    return exit_code


def training_bar(steps: int, done: int, main: bool) -> tqdm:
    """The progress bar, on the main process. TQDM_DISABLE=1 turns it off (tqdm reads TQDM_* for the
    arguments not given here); into a file (a SLURM job log) it writes a line every 30 s, not every 0.1 s."""
    if not main:
        return tqdm(total=steps, initial=done, disable=True)
    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(total=steps, initial=done, unit="step", dynamic_ncols=True, mininterval=interval)


def check_replicas(accelerator, nets: Nets, run_dir: Path) -> None:
    """DDP keeps G's and D's parameters identical on every rank, and LeCam's anchors are averaged over
    the ranks; record a digest per rank, fail loudly if they differ.

    BatchNorm running statistics are not compared: each rank updates them from its own shard after
    DDP broadcasts rank 0's at the start of every forward; checkpoints store rank 0's.
    """
    tensors = [*accelerator.unwrap_model(nets.G).parameters(), *accelerator.unwrap_model(nets.D).parameters()]
    if nets.lecam is not None:
        tensors.append(nets.lecam.state)
    digest = hashlib.sha1()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digests = gather_object([digest.hexdigest()])
    if accelerator.is_main_process:
        write_atomic(RunFolder(run_dir).replicas, json.dumps({"rank_digests": digests}) + "\n")
        if len(set(digests)) != 1:
            raise RuntimeError(f"G/D parameters or LeCam's anchors differ across ranks: {digests}")


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


def log_window(logger, means, state, cfg, accelerator, nets, progress, elapsed, images_per_step,
               scheduled: dict) -> None:  # fmt: skip
    values = means.compute()  # every process: mean over the window and across processes
    values |= scheduled | {
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
    save_grid(images, RunFolder(run_dir).sample(step))
    logger.log_image("samples", grid_image(images), step)
