"""DiffAugment (Zhao et al. 2020): the same random, differentiable transforms on every image D sees.

Applied to real and generated images alike (in the D step, the G step and the penalties), so D
never learns the augmentation, and G receives gradients through it. Each module here is one
transform, registered in AUGMENTATIONS under its module's name, the paper's policy names:
translation.py, cutout.py, color.py. A transform maps a batch in [-1, 1], (N, C, H, W), to one of
the same shape, drawing its random parameters per image from torch's global RNG, which the
checkpoints save and restore; padded and cut-out pixels are 0, as in the paper's code.

Nothing here imports the transforms: AUGMENTATIONS lists them from this folder and imports the ones
a policy names.
"""

import torch

from gan.registry import AUGMENTATIONS


class DiffAugment:
    """The transforms of augment.policy, in order; the identity for an empty policy.

    With p < 1 each transform is applied to each image with probability p, drawn per image and per
    transform, as ADA applies its pipeline; p = 1 applies every transform to every image (and draws
    nothing more). The schedule may change p from step to step.
    """

    def __init__(self, policy: list[str], p: float = 1.0):
        self.policy = list(policy)
        self.p = p
        self.transforms = [AUGMENTATIONS.get(name, "augment.policy") for name in self.policy]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.p <= 0:
            return x
        for transform in self.transforms:
            if self.p >= 1:
                x = transform(x)
            else:
                chosen = torch.rand(len(x), 1, 1, 1, device=x.device) < self.p
                x = torch.where(chosen, transform(x), x)
        return x.contiguous() if self.transforms else x

    def __repr__(self) -> str:
        return f"DiffAugment({self.policy})"
