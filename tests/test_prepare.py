"""python -m gan.prepare and data.name=prepared: a mixed folder of 2,000 files, prepared with 2 workers,
kill -9 and resume, training from the prepared set, and the named sets' cache."""

import json
import os
import signal
import subprocess
import time
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import PYTHON, ROOT, TINY, assert_user_error, base_env, run, snapshot, train
from PIL import Image

from gan.data import ImageData, fit_images
from gan.datasets._images import decode_image, list_images

CLASSES = ("cats", "dogs", "owls")
PER_CLASS = 660
MODES = ("L", "RGB", "RGBA", "P", "I;16", "LA")


def write_image(path, rng, mode: str) -> None:
    h, w = (int(v) for v in rng.integers(9, 40, 2))  # odd sizes, portrait and landscape
    if mode == "I;16":
        Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16)).save(path.with_suffix(".png"))
        return
    rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    image = rgb.convert("P") if mode == "P" else rgb.convert(mode)
    if mode in ("RGBA", "LA", "P"):
        image.save(path.with_suffix(".png"))
    else:
        image.save(path.with_suffix(".jpg" if mode == "RGB" else ".png"), quality=90)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """2,000 images in 3 class folders and the root: JPEG, PNG, RGBA, palette, 16-bit, odd sizes, one corrupt."""
    root = tmp_path_factory.mktemp("mixed") / "images"
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            write_image(root / name / f"{i:04d}", rng, MODES[i % len(MODES)])
    for i in range(19):
        write_image(root / f"top{i}", rng, "RGB")
    (root / "dogs" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def prepare(source, out, *args, env=None, **kwargs):
    return run([PYTHON, "-m", "gan.prepare", source, out, *map(str, args)], env=env, **kwargs)


@pytest.fixture(scope="module")
def prepared(mixed_folder):
    out = mixed_folder.parent / "prepared"
    proc = prepare(mixed_folder, out, "--resolution", 32, "--channels", 3, "--workers", 2, "--chunk", 300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_prepared_bytes_equal_the_in_memory_path(mixed_folder, prepared):
    out, proc = prepared
    images = np.load(out / "images.npy", mmap_mode="r")
    labels = np.load(out / "labels.npy")
    files = [p for p in sorted(mixed_folder.iterdir()) if p.is_file()]  # root images: label 0
    files += [p for name in CLASSES for p in list_images(mixed_folder / name)]
    expected, expected_labels = [], []
    for path in files:
        image = decode_image(path, 3)
        if image is not None:
            expected.append(fit_images(image.unsqueeze(0), 32, 3)[0])
            label = CLASSES.index(path.parent.name) if path.parent != mixed_folder else 0
            expected_labels.append(label)
    assert images.shape == (len(expected), 3, 32, 32) == (3 * PER_CLASS + 19, 3, 32, 32)
    assert np.array_equal(images, torch.stack(expected).numpy())
    assert labels.tolist() == expected_labels


def test_manifest_counts_and_skipped_files(prepared):
    out, proc = prepared
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 3 * PER_CLASS + 19
    assert (manifest["resolution"], manifest["channels"], manifest["class_names"]) == (32, 3, list(CLASSES))
    assert manifest["skipped"]["count"] == 1
    assert manifest["skipped"]["files"][0][0] == "dogs/corrupt.jpg"
    assert manifest["source"]["name"] == "image_folder" and len(manifest["digest"]) == 32
    assert "skipped 1 unreadable image file(s)" in proc.stdout
    assert "data.name=prepared" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["images.npy", "labels.npy", "manifest.json"]
    assert not list(out.parent.glob(".prepared*"))  # no partial folder or lock left


def test_kill_9_while_preparing_then_resume(mixed_folder, prepared, tmp_path):
    out = tmp_path / "killed"
    args = [PYTHON, "-m", "gan.prepare", str(mixed_folder), str(out), "--resolution", "32", "--channels", "3",
            "--workers", "1", "--chunk", "100"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=ROOT, env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = tmp_path / ".killed.partial" / "parts.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "preparing ended before it could be killed"
    assert not out.exists()  # nothing that looks like a prepared set
    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the interrupted preparation" in resumed.stdout
    done = json.loads((out / "manifest.json").read_text())
    first = json.loads((prepared[0] / "manifest.json").read_text())
    assert done["digest"] == first["digest"]  # the same content as the uninterrupted run's, cut differently
    assert np.array_equal(np.load(out / "images.npy"), np.load(prepared[0] / "images.npy"))


def test_other_settings_start_over(mixed_folder, tmp_path):
    out = tmp_path / "p"
    partial = tmp_path / ".p.partial"
    partial.mkdir()
    (partial / "job.json").write_text(json.dumps({"format": "gan-prepared-1", "resolution": 64}))
    proc = prepare(mixed_folder, out, "--resolution", 32, "--channels", 1, "--workers", 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting over" in proc.stdout
    assert np.load(out / "images.npy", mmap_mode="r").shape[1:] == (1, 32, 32)


def prepare_in_process(capsys, *args) -> str:
    """gan.prepare's main in this process: exit 2 and its one error line (the CLI test below runs it for real)."""
    from gan.prepare import main

    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_bad_sources_and_outputs_are_one_line(mixed_folder, prepared, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no readable images: no image files" in prepare_in_process(capsys, empty, tmp_path / "o", "--resolution", 32,
                                                        "--channels", 1)  # fmt: skip
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "a.png").write_bytes(b"nothing")
    assert "none of its 1 image file(s) decodes" in prepare_in_process(capsys, unreadable, tmp_path / "o", "--resolution", 32,
                                                      "--channels", 1)  # fmt: skip
    assert "neither a folder nor a named set" in prepare_in_process(capsys, tmp_path / "nowhere", tmp_path / "o",
                                                                    "--resolution", 32, "--channels", 1)  # fmt: skip
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    before = snapshot(mine)
    assert "is not a prepared data set" in prepare_in_process(capsys, mixed_folder, mine, "--resolution", 32,
                                                              "--channels", 3)  # fmt: skip
    assert snapshot(mine) == before
    # another set at OUT is kept; the same request is already done
    assert "already holds another prepared set" in prepare_in_process(capsys, mixed_folder, prepared[0],
                                                                      "--resolution", 32, "--channels", 1)  # fmt: skip
    again = prepare(mixed_folder, prepared[0], "--resolution", 32, "--channels", 3, "--chunk", 300)
    assert again.returncode == 0 and "1,999 images" in again.stdout
    # the command line: a resolution no network produces, refused before any file is decoded
    line = assert_user_error(prepare(mixed_folder, tmp_path / "o", "--resolution", 100, "--channels", 3),
                             "--resolution 100")  # fmt: skip
    assert "64" in line and not (tmp_path / "o").exists()


def damaged_copy(prepared, tmp_path, damage: str):
    copy = tmp_path / "set"
    copy.mkdir()
    for name in ("images.npy", "labels.npy", "manifest.json"):
        (copy / name).write_bytes((prepared[0] / name).read_bytes())
    if damage == "manifest":
        (copy / "manifest.json").write_text('{"format": "gan-prepared-1", "count": ')
    elif damage == "shape":
        np.save(copy / "images.npy", np.zeros((3, 3, 32, 32), np.uint8))
    elif damage == "labels":
        np.save(copy / "labels.npy", np.full(json.loads((copy / "manifest.json").read_text())["count"], 7))
    elif damage == "foreign":
        (copy / "images.npy").write_bytes(b"\x93NUMPY" + bytes(100))
    return copy


@pytest.mark.parametrize("damage, needle", [("manifest", "manifest.json"), ("shape", "images.npy"),
                                            ("labels", "labels.npy"), ("foreign", "images.npy")])  # fmt: skip
def test_a_damaged_prepared_set_is_one_line(prepared, tmp_path, damage, needle):
    from gan.config import DataConfig
    from gan.data import build_data
    from gan.errors import GanError

    copy = damaged_copy(prepared, tmp_path, damage)
    cfg = SimpleNamespace(data=DataConfig(name="prepared", root=str(copy), resolution=32, channels=3, limit=None))
    with pytest.raises(GanError) as err:
        build_data(cfg)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_train_py_on_a_damaged_prepared_set(prepared, tmp_path):
    copy = damaged_copy(prepared, tmp_path, "labels")
    proc = run([PYTHON, "train.py", "--config", "configs/dcgan_mnist.yaml", "--run-dir", tmp_path / "run", *TINY,
                "data.name=prepared", f"data.root={copy}", "data.resolution=32", "data.channels=3"])  # fmt: skip
    assert_user_error(proc, "labels.npy", "outside [0, 2]")
    assert not (tmp_path / "run").exists()


def test_train_and_resume_from_a_prepared_set_in_two_processes(prepared, tmp_path):
    """2 processes read their own batches of the memory map; a resume equals the uninterrupted run."""
    settings = ["data.name=prepared", f"data.root={prepared[0]}", "data.resolution=32", "data.channels=3",
                "data.limit=320", "train.batch_size=16", "model.g_channels=8", "model.d_channels=8",
                "train.log_every=2", "train.sample_every=7", "train.checkpoint_every=7"]  # fmt: skip
    # 320 images / (16 x 2) = 10 batches per epoch: 14 steps cross an epoch boundary after the resume.
    train("dcgan_mnist", tmp_path / "straight", *settings, "train.steps=14", processes=2)
    train("dcgan_mnist", tmp_path / "stopped", *settings, "train.steps=7", processes=2)
    resumed = train("dcgan_mnist", tmp_path / "stopped", *settings, "train.steps=14", processes=2)
    assert "resuming from" in resumed.stdout + resumed.stderr
    for name in ("G", "D"):
        from safetensors.torch import load_file

        a = load_file(tmp_path / "straight" / "checkpoints" / "step-0000014" / f"{name}.safetensors")
        b = load_file(tmp_path / "stopped" / "checkpoints" / "step-0000014" / f"{name}.safetensors")
        for key in a:
            assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), f"{name}.{key}"
    digests = json.loads((tmp_path / "straight" / "replicas.json").read_text())["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]


def test_named_sets_are_prepared_once_in_the_cache(tmp_path, monkeypatch, capsys):
    """Two processes prepare once; a later start, in this process, reuses it; another size is another set."""
    from gan.config import load_config
    from gan.data import build_data

    env = base_env(ACCELERATE_USE_CPU="1", GAN_CACHE_DIR=str(tmp_path / "cache"))
    first = train("dcgan_mnist", tmp_path / "a", *TINY, "train.steps=2", processes=2, env=env)
    assert first.stdout.count("preparing data.name=mnist5k") == 1, first.stdout
    sets = list((tmp_path / "cache" / "data").iterdir())
    assert len(sets) == 1 and sets[0].name.startswith("mnist5k-28px-1ch-")
    made = os.stat(sets[0] / "images.npy").st_mtime_ns
    monkeypatch.setenv("GAN_CACHE_DIR", str(tmp_path / "cache"))
    capsys.readouterr()
    data = build_data(load_config(ROOT / "configs/dcgan_mnist.yaml", ["data.limit=null"]))
    assert "preparing" not in capsys.readouterr().out and len(data) == 5000
    assert os.stat(sets[0] / "images.npy").st_mtime_ns == made
    build_data(load_config(ROOT / "configs/dcgan_mnist.yaml", ["data.resolution=32"]))
    assert capsys.readouterr().out.count("preparing data.name=mnist5k at 32 px") == 1
    assert len(list((tmp_path / "cache" / "data").iterdir())) == 2


def test_a_memory_map_moves_to_a_device_in_slices_without_a_view_of_it(tmp_path, monkeypatch):
    # data.on_device's copy (ImageData.to): a read-only memory map of 10 rows, 4 rows per slice, goes
    # to the device as a tensor of its own, equal to it, with no warning about a non-writable array.
    path = tmp_path / "images.npy"
    np.save(path, np.arange(10 * 1 * 2 * 2, dtype=np.uint8).reshape(10, 1, 2, 2))
    images = np.load(path, mmap_mode="r")
    monkeypatch.setattr("gan.data.TO_DEVICE_ROWS", 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        moved = ImageData(images, torch.arange(10), 1).to("cpu")
    assert torch.equal(moved.images, torch.from_numpy(np.array(images))) and moved.images.dtype == torch.uint8
    moved.images += 1  # its own memory: the map is unchanged
    assert np.array_equal(np.load(path), np.arange(40, dtype=np.uint8).reshape(10, 1, 2, 2))
