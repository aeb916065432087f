"""Checkpoints that survive kill -9 and load without executing code.

Layout of `RUN_DIR/checkpoints/step-NNNNNNN/`:
  G.safetensors, D.safetensors, G_ema.safetensors  network weights (safetensors: no pickle)
  state.pt          step, data position, optimizers, scaler, EMA count, resolved config:
                    plain tensors and containers, read with torch.load(weights_only=True)
  rng-rankR.pt      each process's torch RNG state, and its GPU's on a GPU
  meta.json         step, kimg and which files exist; written last

Everything is written into `.tmp-step-NNNNNNN/` and renamed into place, so a crash leaves
either the old set or a complete new one. Leftover temporary folders are ignored and removed.
A checkpoint that resume had to skip is renamed `step-NNNNNNN.bad`: it is kept for inspection,
never listed as complete, and rotation bounds how many such folders stay. Only these names are
ever created, renamed or deleted under checkpoints/.
Accelerate's `save_state` pickles RNG and sampler objects, so we do not use it here.

  folders.py   names, listing, atomic saving, rotation, setting aside
  reading.py   safe, checked reading of each file; load_generator for generate and the evaluator
  training.py  save() and resume() of the training state, which the loop calls
  warm_start.py  train.init_from: a new run starts from another run's weights
"""

from gan.checkpoint.folders import (
    BAD_DIR,
    STEP_DIR,
    TMP_PREFIX,
    begin_save,
    checkpoints_dir,
    discard,
    finish_save,
    list_checkpoints,
    list_set_aside,
    remove_temporary,
    rotate,
    save_rng,
    set_aside,
    state_dict_for_file,
    step_name,
)
from gan.checkpoint.reading import (
    GENERATOR_FIELDS,
    STATE_FIELDS,
    Checkpoint,
    check_optimizer_state,
    generator_file,
    load_generator,
    load_network,
    load_plain,
    load_tensors,
    read_meta,
    read_network,
    read_rng,
    read_state,
    resolve_checkpoint,
)

__all__ = [
    "BAD_DIR", "GENERATOR_FIELDS", "STATE_FIELDS", "STEP_DIR", "TMP_PREFIX", "Checkpoint", "begin_save",
    "check_optimizer_state", "checkpoints_dir", "discard", "finish_save", "generator_file", "list_checkpoints",
    "list_set_aside", "load_generator", "load_network", "load_plain", "load_tensors", "read_meta", "read_network",
    "read_rng", "read_state", "remove_temporary", "resolve_checkpoint", "rotate", "save_rng", "set_aside",
    "state_dict_for_file", "step_name",
]  # fmt: skip
