"""train.init_from: a new run's G, D and G_ema start from another run's weights.

The source is a run folder (its newest complete checkpoint) or one checkpoint folder. Only the
weights come over: the new run starts at step 0 with fresh optimizers, its own data position and
RNG. Its G_ema starts from the source's G_ema (from its G where it kept none) and averages on from
there at the new run's rate; with train.ema_rampup the first updates weigh G almost fully, so G_ema
then starts over from the fine-tuned G.
"""

from pathlib import Path

import torch

from gan.checkpoint import reading
from gan.errors import GanError


def read_weights(source: str, modules: dict[str, torch.nn.Module]) -> tuple[dict, Path]:
    """({name: tensors}, checkpoint folder) for `modules` (G, D, G_ema: any of them), every file checked
    against its network's names and shapes; the modules are unchanged. A source that is missing or
    holds other networks raises GanError naming train.init_from and the file."""
    try:
        found = reading.resolve_checkpoint(Path(source))
        files = reading.network_files(found)
        return {name: reading.read_network(module, files[name]) for name, module in modules.items()}, found.path
    except GanError as err:
        raise GanError(f"train.init_from={source}: {err}") from None


def check(source: str, G: torch.nn.Module, D: torch.nn.Module) -> None:
    """Before the run folder is touched: the source exists and its networks fit these."""
    read_weights(source, {"G": G, "D": D, "G_ema": G})


def apply(source: str, G: torch.nn.Module, D: torch.nn.Module, G_ema) -> Path:
    """Load the source's weights into G, D and G_ema (an AveragedModel, or None); returns the checkpoint
    folder they came from."""
    modules = {"G": G, "D": D} | ({"G_ema": G_ema.module} if G_ema is not None else {})
    tensors, path = read_weights(source, modules)
    for name, module in modules.items():
        module.load_state_dict(tensors[name], strict=True)
    if G_ema is not None:
        # AveragedModel copies G over its weights on its first update (n_averaged == 0): one update
        # counted keeps the source's G_ema as the start of the average instead.
        G_ema.n_averaged.fill_(1)
    return path
