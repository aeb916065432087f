"""gan.generate and gan.report: failed writes that leave no temporary file, and the noise that
generate and evaluate.py draw for a seed, unchanged now that they share gan.samples.sample_latents.

--num, --seed and --out rows that only need "one line, exit 2, nothing changed" are in test_bad_inputs.py.
"""

import numpy as np
import pytest
import torch
from helpers import PYTHON, run
from PIL import Image

from gan.errors import GanError
from gan.samples import check_seed, fixed_noise, sample_latents


def assert_one_line_error(proc, *phrases) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_generate_onto_a_folder_named_png_leaves_no_temporary_file(dcgan_run, tmp_path):
    target = tmp_path / "x.png"
    target.mkdir()  # the rename onto it fails, after the grid was written to a temporary file
    (target / "mine.txt").write_text("a user's file\n")
    proc = run([PYTHON, "-m", "gan.generate", dcgan_run, "--num", "4", "--out", target])
    assert_one_line_error(proc, f"--out {str(target)!r} cannot be written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]  # no .x.png.*tmp* beside it
    assert sorted(p.name for p in target.iterdir()) == ["mine.txt"]


def test_report_onto_a_folder_is_refused_before_rendering(dcgan_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = run([PYTHON, "-m", "gan.report", dcgan_run, "--out", out])
    assert_one_line_error(proc, f"--out {str(out)!r} is a folder", "report.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not any(out.iterdir())


# --------------------------------------------------------------------------- the noise of a seed


def generate_latents_before(num, z_dim, seed, num_classes, label):
    """gan.generate's own sampler, before the shared one."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(num, z_dim, generator=gen)
    labels = torch.full((num,), label or 0, dtype=torch.long)
    if label is None and num_classes:
        labels = torch.randint(num_classes, (num,), generator=gen)
    return z, labels


def evaluate_latents_before(num, z_dim, seed, num_classes):
    """gan.evaluation.runner's own sampler, before the shared one."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(num, z_dim, generator=gen)
    labels = torch.randint(max(num_classes, 1), (num,), generator=gen)
    return z, labels


def fixed_noise_before(num, z_dim, seed, num_classes):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(num, z_dim, generator=gen), torch.arange(num) % max(num_classes, 1)


def assert_same(got, expected) -> None:
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("num_classes", [0, 10])
@pytest.mark.parametrize("seed", [0, 123456789, 2**64 - 1])
def test_the_shared_sampler_draws_what_generate_and_evaluate_drew(seed, num_classes):
    for label in (None, 0, max(num_classes - 1, 0)):
        classes = "random" if label is None else label  # as gan.generate passes --class
        assert_same(sample_latents(37, 11, seed, num_classes, classes),
                    generate_latents_before(37, 11, seed, num_classes, label))  # fmt: skip
    # as gan.evaluation.runner.Evaluator.evaluate calls it
    assert_same(sample_latents(37, 11, seed, num_classes, classes="random"),
                evaluate_latents_before(37, 11, seed, num_classes))  # fmt: skip
    assert_same(fixed_noise(37, 11, seed, num_classes), fixed_noise_before(37, 11, seed, num_classes))


def test_generate_writes_the_images_of_the_noise_it_drew_before(dcgan_run, tmp_path):
    from gan.checkpoint import load_generator
    from gan.samples import generate_images

    seed = 2**64 - 1  # the top of the seed range
    out = tmp_path / "out"
    run([PYTHON, "-m", "gan.generate", dcgan_run, "--num", "5", "--seed", seed, "--out", out], check=True)
    G, _, _ = load_generator(dcgan_run)
    expected = generate_images(G, *generate_latents_before(5, G.z_dim, seed, 0, None))
    for i, image in enumerate(expected):
        written = np.asarray(Image.open(out / f"{i:06d}.png"))
        assert np.array_equal(written, image[0].numpy()), i


@pytest.mark.parametrize("seed", [-1, 2**64, 99999999999999999999999])
def test_a_seed_outside_torch_range_is_a_user_error(seed):
    with pytest.raises(GanError, match=r"--seed must be in \[0, 2\*\*64\)"):
        check_seed(seed)


def test_the_evaluator_does_not_import_the_training_loop():
    """The evaluator shares the trackers with training, not the loop's modules (seconds of imports)."""
    code = "import sys, gan.evaluation.runner; assert 'gan.train_loop' not in sys.modules, 'imported'"
    run([PYTHON, "-c", code], check=True)
