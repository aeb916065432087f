"""evaluate.py --reference: a folder of images and an .npz of FID statistics give the numbers the
run's own data give when they hold the same images or statistics; the bad references are one line."""

import json
import shutil

import numpy as np
import pytest
from helpers import assert_user_error, evaluate_offline
from PIL import Image
from safetensors.numpy import load_file

from gan.config import load_config
from gan.data import as_tensor, build_data

SMALL = ["--num-samples", "16", "--batch-size", "16", "--checkpoints", "latest"]


def last_record(run_dir) -> dict:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def test_a_folder_of_the_runs_own_images_gives_the_runs_numbers(dcgan_run, cache, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(dcgan_run, run_dir)
    # the 512 images the run trains on (data.limit=512), as PNG files in class folders
    data = build_data(load_config(None, ["data.limit=512"]))
    folder = tmp_path / "digits"
    for i, (image, label) in enumerate(zip(as_tensor(data.images), data.labels.tolist(), strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(folder / str(label) / f"{i:04d}.png")
    # fd_mnist: its small classifier reads 512 real images in a second where Inception takes a minute
    evaluate_offline(cache, run_dir, "--metrics", "fd_mnist", *SMALL)
    own = last_record(run_dir)
    evaluate_offline(cache, run_dir, "--metrics", "fd_mnist", *SMALL, "--reference", folder)
    other = last_record(run_dir)
    assert other["settings"]["reference"] == str(folder.resolve()) and "reference" not in own["settings"]
    assert other["fd_mnist"] == pytest.approx(own["fd_mnist"], rel=1e-6)


def test_an_npz_of_the_statistics_gives_the_same_fid_and_kid_unavailable(dcgan_run, cache, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(dcgan_run, run_dir)
    evaluate_offline(cache, run_dir, "--metrics", "fid", "--num-real", "16", *SMALL)
    own = last_record(run_dir)
    (stats_file,) = [p for p in (cache / "real-stats").glob("mnist5k-28px-1ch-16-inception*.safetensors")]
    stats = load_file(stats_file)
    npz = tmp_path / "stats.npz"
    np.savez(npz, mu=stats["mu"], sigma=stats["sigma"])
    proc = evaluate_offline(cache, run_dir, "--metrics", "fid,kid", *SMALL, "--reference", npz)
    assert "kid unavailable: --reference" in proc.stdout
    other = last_record(run_dir)
    assert other["fid"] == pytest.approx(own["fid"], rel=1e-6) and other["kid_mean"] is None


def test_bad_references_are_one_line(dcgan_run, cache, tmp_path):
    cases = []
    np.savez(tmp_path / "no_sigma.npz", mu=np.zeros(2048))
    cases.append((tmp_path / "no_sigma.npz", "has no sigma array"))
    np.savez(tmp_path / "small.npz", mu=np.zeros(8), sigma=np.eye(8))
    cases.append((tmp_path / "small.npz", "features here have 2048 dimensions"))
    cases.append((tmp_path / "missing.npz", "no such .npz file"))
    cases.append(("nowhere", "neither a folder, a prepared set, an .npz file nor a registered input"))
    cases.append(("cifar10-train", "torch-fidelity could not get it"))  # offline: no download
    for reference, needle in cases:
        proc = evaluate_offline(cache, dcgan_run, "--metrics", "fid", *SMALL, "--reference", reference, check=False)
        assert_user_error(proc, needle)
    fd = evaluate_offline(cache, dcgan_run, "--metrics", "fd_mnist", *SMALL, "--reference", tmp_path / "small.npz", check=False)
    assert_user_error(fd, "--metrics fd_mnist reads its own extractor's features")
