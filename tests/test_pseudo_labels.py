"""Self-conditioning (data.pseudo_labels): k-means ids, their file in the run folder, generation by
the clusters' frequencies, and the bad inputs."""

import numpy as np
import pytest
import torch
from helpers import PYTHON, TINY, assert_user_error, run, train

from gan import pseudo_labels
from gan.checkpoint import load_generator
from gan.config import load_config
from gan.errors import GanError
from gan.samples import sample_latents


def three_groups(n_per_group: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (3n, 1, 28, 28): a bright square in one of three corners, on noise; and each image's group."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(3 * n_per_group, 1, 28, 28), dtype=np.uint8)
    groups = np.repeat(np.arange(3), n_per_group)
    corners = [(0, 0), (0, 16), (16, 8)]
    for image, group in zip(images, groups, strict=True):
        top, left = corners[group]
        image[0, top : top + 12, left : left + 12] = 220
    order = rng.permutation(len(images))
    return images[order], groups[order]


@pytest.mark.parametrize("fit_images", [pseudo_labels.FIT_IMAGES, 40])
def test_kmeans_ids_are_the_groups(monkeypatch, fit_images):
    # 40: fitted on a sample of the images, then all assigned in chunks of 64 (the path of a large set)
    monkeypatch.setattr(pseudo_labels, "FIT_IMAGES", fit_images)
    monkeypatch.setattr(pseudo_labels, "CHUNK", 64)
    images, groups = three_groups(100)
    ids, centres = pseudo_labels.cluster(images, 3, seed=0)
    assert ids.dtype == np.int64 and ids.shape == (300,) and centres.shape == (3, 14 * 14)
    # one id per group, a different one for each
    assert [len(set(ids[groups == g])) for g in range(3)] == [1, 1, 1]
    assert len({ids[groups == g][0] for g in range(3)}) == 3
    again, _ = pseudo_labels.cluster(images, 3, seed=0)
    assert np.array_equal(ids, again)


def test_the_stored_file_is_checked(tmp_path):
    path = tmp_path / "pseudo_labels.npz"
    ids = np.array([0, 2, 1, 2], dtype=np.int64)
    pseudo_labels.save(path, ids, np.zeros((3, 5), np.float32), "digest-a")
    assert np.array_equal(pseudo_labels.load(path, 4, 3, "digest-a"), ids)
    for n, k, digest in [(4, 3, "digest-b"), (5, 3, "digest-a"), (4, 4, "digest-a")]:
        with pytest.raises(GanError, match="but this run has"):
            pseudo_labels.load(path, n, k, digest)
    pseudo_labels.save(path, np.array([0, 3, 1, 2]), np.zeros((3, 5), np.float32), "digest-a")
    with pytest.raises(GanError, match="outside"):
        pseudo_labels.load(path, 4, 3, "digest-a")
    path.write_bytes(path.read_bytes()[:100])  # torn
    with pytest.raises(GanError, match="not a readable pseudo-label file"):
        pseudo_labels.load(path, 4, 3, "digest-a")


def test_classes_are_drawn_by_the_counts():
    z, c = sample_latents(4000, 8, seed=1, num_classes=3, class_counts=[0, 3000, 1000])
    uniform_z, _ = sample_latents(4000, 8, seed=1, num_classes=3)
    assert torch.equal(z, uniform_z)  # z does not depend on how classes are drawn
    assert (c != 0).all()
    assert 0.70 < (c == 1).float().mean().item() < 0.80


def test_config_needs_a_conditional_network_and_two_clusters():
    with pytest.raises(GanError, match="set model.conditional=true"):
        load_config(None, ["data.pseudo_labels=10"])
    with pytest.raises(GanError, match=r"data.pseudo_labels must be in \[2, 1000\]"):
        load_config(None, ["data.pseudo_labels=1", "model.conditional=true"])


def test_train_resume_generate(tmp_path):
    run_dir = tmp_path / "run"
    train("cgan_mnist", run_dir, *TINY, "data.pseudo_labels=4", "train.steps=3")
    stored = (run_dir / "pseudo_labels.npz").read_bytes()
    G, _, _ = load_generator(run_dir)
    assert G.num_classes == 4 and len(G.class_counts) == 4 and sum(G.class_counts) == 512
    # a resume reads the ids back: the file is not made again
    train("cgan_mnist", run_dir, *TINY, "data.pseudo_labels=4")
    assert (run_dir / "pseudo_labels.npz").read_bytes() == stored
    assert load_generator(run_dir)[2].step == 6
    ok = run([PYTHON, "-m", "gan.generate", run_dir, "--class", "3", "--num", "8", "--out", tmp_path / "c3.png"])
    assert ok.returncode == 0, ok.stderr
    bad = run([PYTHON, "-m", "gan.generate", run_dir, "--class", "4", "--num", "8", "--out", tmp_path / "c4.png"])
    assert_user_error(bad, "--class 4 is out of range", "4 classes")
    # a torn file is one line, and is left for the user to look at
    (run_dir / "pseudo_labels.npz").write_bytes(stored[:200])
    torn = train("cgan_mnist", run_dir, *TINY, "data.pseudo_labels=4", "train.steps=9", check=False)
    assert_user_error(torn, "pseudo_labels.npz", "not a readable pseudo-label file")
    assert (run_dir / "pseudo_labels.npz").read_bytes() == stored[:200]
