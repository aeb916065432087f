"""Scheduled values: learning rates, Adam's beta2, the R1/R2 weights, G_ema's half-life, the
augmentation probability and top-k's fraction, each ramped from its key's own value to `schedule.NAME.end`.

A ramp is a function of the images seen (G steps x batch x processes) over the horizon
(`schedule.kimg` thousand images, or train.steps), held at its end after it:
- constant: the start value throughout;
- linear: start + t (end - start);
- cosine: start + (1 - cos(pi t)) / 2 (end - start), as R3GAN's schedules.
The values depend on the step alone, so a resumed run continues them exactly; `apply` writes them
into the optimizers, the loss (penalties, top_k), G_ema's rate and the augmentation before each step.
"""

import dataclasses
import math

from gan.config import SCHEDULED, Config


def ramp(shape: str, start: float, end: float | None, t: float) -> float:
    t = min(max(t, 0.0), 1.0)
    if shape == "constant" or end is None:
        return start
    if shape == "linear":
        return start + t * (end - start)
    return start + (1 - math.cos(math.pi * t)) / 2 * (end - start)


def start_values(cfg: Config) -> dict:
    """Each scheduled key's start: the value of the key it is named after (None when that key is unset)."""
    return {"lr_g": cfg.optim.lr_g, "lr_d": cfg.optim.lr_d, "beta2": cfg.optim.betas[1],
            "r1_weight": cfg.loss.r1_weight, "r2_weight": cfg.loss.r2_weight,
            "ema_kimg": cfg.train.ema_kimg, "augment_p": cfg.augment.p, "top_k": cfg.loss.top_k}  # fmt: skip


class Schedule:
    def __init__(self, cfg: Config, images_per_step: int):
        self.cfg = cfg
        self.images_per_step = images_per_step
        self.starts = start_values(cfg)
        horizon_kimg = cfg.schedule.kimg
        self.horizon = horizon_kimg * 1000 if horizon_kimg is not None else cfg.train.steps * images_per_step

    def values(self, step: int) -> dict:
        """{name: value} at `step` G steps done, for every scheduled key whose start is set."""
        t = step * self.images_per_step / self.horizon
        out = {}
        for name in SCHEDULED:
            start, shape = self.starts[name], getattr(self.cfg.schedule, name)
            if start is not None:
                out[name] = ramp(shape.shape, start, shape.end, t)
        return out

    def ramped(self) -> list[str]:
        """The names whose shape is not constant: what the log shows as sched/NAME."""
        return [name for name in SCHEDULED if getattr(self.cfg.schedule, name).shape != "constant"]

    def apply(self, step: int, nets, loss_fn) -> dict:
        """Set this step's values where they act; returns them."""
        values = self.values(step)
        for opt, lr in ((nets.opt_G, values["lr_g"]), (nets.opt_D, values["lr_d"])):
            for group in opt.param_groups:
                group["lr"] = lr
                group["betas"] = (group["betas"][0], values["beta2"])
        loss_fn.penalties = dataclasses.replace(loss_fn.penalties, r1_weight=values["r1_weight"],
                                                r2_weight=values["r2_weight"])  # fmt: skip
        loss_fn.top_k = values["top_k"]
        if hasattr(nets.augment, "p"):  # a DiffAugment, not the identity
            nets.augment.p = values["augment_p"]
        if nets.ema_rate is not None and "ema_kimg" in values:
            nets.ema_rate.half_life_kimg = values["ema_kimg"]
        return values
