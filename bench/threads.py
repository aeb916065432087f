"""One training process with 1 thread against 2 threads: the README's first command, side by side.

python -m bench.threads [--steps 200] [--rounds 2] [--threads 1,2]

Runs the real command, `python train.py` on the default preset (dcgan_mnist, batch 64), once per
thread count and round, alternated (1, 2, 1, 2, ...), each into a fresh run folder, and reads the
training rate from the run's own train_log.jsonl (the windows after the first, which holds start-up).
Prints each run's steps/s, each thread count's best, and the ratio of the best rates. Run it on an
idle machine: a second busy core penalises 2 threads far more than 1.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.measure import logged_rates
from gan.files import read_jsonl
from gan.run_folder import RunFolder, stored_config

ROOT = Path(__file__).resolve().parents[1]
LOG_EVERY = 25


def steps_per_second(threads: int, steps: int, workdir: Path) -> float:
    run_dir = Path(tempfile.mkdtemp(dir=workdir)) / "run"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled", "TQDM_DISABLE": "1"}
    overrides = [f"train.steps={steps}", f"train.log_every={LOG_EVERY}", f"train.sample_every={steps}",
                 f"train.checkpoint_every={steps}"]  # fmt: skip
    subprocess.run([sys.executable, str(ROOT / "train.py"), "--run-dir", str(run_dir), *overrides],
                   env=env, check=True, capture_output=True)  # fmt: skip
    img_per_s = logged_rates(read_jsonl(RunFolder(run_dir).train_log))["steady_img_per_s"]
    return img_per_s / stored_config(run_dir).train.batch_size


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    if args.steps < 2 * LOG_EVERY:
        parser.error(f"--steps must be at least {2 * LOG_EVERY}: the first log window holds start-up")
    counts = [int(t) for t in args.threads.split(",")]
    best = dict.fromkeys(counts, 0.0)
    with tempfile.TemporaryDirectory() as workdir:
        for round_ in range(args.rounds):
            for threads in counts:
                rate = steps_per_second(threads, args.steps, Path(workdir))
                best[threads] = max(best[threads], rate)
                print(f"round {round_ + 1}: {threads} thread(s): {rate:.2f} steps/s", flush=True)
    for threads in counts:
        print(f"best, {threads} thread(s): {best[threads]:.2f} steps/s, "
              f"{best[threads] / best[counts[0]]:.2f}x {counts[0]} thread(s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
