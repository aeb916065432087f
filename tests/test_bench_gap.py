"""bench.gap: class adherence, grey levels and the faint-background FID of a run's images."""

import json
import re

import torch
from helpers import PYTHON, TINY, base_env, evaluate_offline, run, train

from bench.gap import bands, classified
from gan.config import load_config
from gan.data import build_data


def test_bands_are_the_shares_of_pixels_at_each_grey_level():
    images = torch.tensor([[[[0, 0, 5, 255]]]], dtype=torch.uint8)
    assert bands(images) == [0.5, 0.25, 0, 0, 0, 0, 0, 0, 0.25]


def test_the_classifier_labels_real_digits_as_their_class():
    digits = build_data(load_config("configs/cgan_mnist.yaml", ["data.limit=1000"]))
    assert float((classified(digits.images) == digits.labels).float().mean()) > 0.9


def test_its_fid_as_drawn_is_the_evaluators_for_the_same_checkpoint(tmp_path, cache):
    run_dir = tmp_path / "cgan"
    train("cgan_mnist", run_dir, *TINY, "data.limit=100")  # the first 100 digits, all zeros: few to score
    evaluate_offline(cache, run_dir, "--metrics", "fid", "--num-samples", "20", "--checkpoints", "latest")
    fid = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["fid"]
    env = base_env(GAN_CACHE_DIR=str(cache), GAN_OFFLINE="1", ACCELERATE_USE_CPU="1")
    out = run([PYTHON, "-m", "bench.gap", run_dir, "--num-samples", "20"], env=env, check=True).stdout
    assert re.search(r"^class adherence \d\.\d{4} \(per class 0:\S+\); the classifier's accuracy on its 100 "
                     r"held-out real digits \d\.\d{4}$", out, re.M), out  # fmt: skip
    assert re.search(r"^ +real( +[01]\.\d{4}){9}$", out, re.M) and re.search(r"^ +generated( +[01]\.\d{4}){9}$", out, re.M), out
    # printed to 3 decimals; another noise seed moves this tiny G's FID by about 1
    assert abs(float(re.search(r"^FID as drawn: (\S+)$", out, re.M).group(1)) - fid) < 0.002, (out, fid)
    assert re.search(r"^FID levels below 10 set to 0: \d+\.\d{3}$", out, re.M), out


def test_bad_arguments_are_one_line(tmp_path):
    for args, says in ((["--num-samples", "1"], "--num-samples must be in [2, 50000]"),
                       (["--faint", "256"], "--faint must be a grey level in [1, 255], got 256")):  # fmt: skip
        proc = run([PYTHON, "-m", "bench.gap", tmp_path, *args])
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {says}"), proc.stderr
