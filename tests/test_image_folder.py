"""data.name=image_folder on hostile and unusual files: bombs, corrupt files, 16-bit and float images, class folders."""

import io
import itertools
import struct
import warnings
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import PYTHON, run
from PIL import Image, UnidentifiedImageError

from gan.config import DataConfig
from gan.data import data_source
from gan.errors import GanError
from gan.prepared import write_prepared


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, rows) -> bytes:
    """A PNG written by hand (PIL cannot write 16-bit RGB), each row compressed as it comes."""
    z = zlib.compressobj()
    idat = b"".join(z.compress(b"\0" + row) for row in rows) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def blank_png(width: int, height: int) -> bytes:
    """A 1-bit black PNG: 20000x10000 px in about 24 KB, without holding the pixels in memory."""
    return png_bytes(width, height, 1, 0, itertools.repeat(bytes((width + 7) // 8), height))


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def hostile_files() -> dict:
    """File name -> (bytes, what plain PIL raises on open and load)."""
    pixels = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    bmp = bytearray(encoded(pixels, "BMP"))  # 1,782 bytes
    bmp[18:26] = struct.pack("<ii", 60000, 60000)  # width, height: 3.6 gigapixels
    raw = zlib.compress(b"".join(b"\0" + row.tobytes() for row in pixels))
    header = struct.pack(">IIBBBBB", 24, 24, 8, 2, 0, 0, 0)
    broken_chunk = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", raw[:200])
                    + png_chunk(b"\x85\xa9Qx", raw[200:]) + png_chunk(b"IEND", b""))  # fmt: skip
    dds = bytearray(encoded(pixels, "DDS"))
    dds[80:84] = struct.pack("<I", 11)  # pixel format flags PIL does not know
    jpeg, tiff = encoded(pixels, "JPEG"), encoded(pixels, "TIFF")
    many_samples = bytearray(tiff)
    ifd = struct.unpack("<I", tiff[4:8])[0]
    for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack("<H", tiff[ifd : ifd + 2])[0], 12):
        if struct.unpack("<H", tiff[entry : entry + 2])[0] == 277:  # SamplesPerPixel
            many_samples[entry + 8 : entry + 10] = struct.pack("<H", 50000)  # PIL logs an error line
    return {
        "bomb.png": (blank_png(20000, 10000), Image.DecompressionBombError),  # over 2x MAX_IMAGE_PIXELS
        "large.png": (blank_png(10000, 10000), Image.DecompressionBombWarning),  # between 1x and 2x
        "fuzzed.bmp": (bytes(bmp), Image.DecompressionBombError),
        "broken_chunk.png": (broken_chunk, SyntaxError),
        "dds_inside.png": (bytes(dds), NotImplementedError),  # a DDS file under an image suffix
        "cut.jpg": (jpeg[: len(jpeg) // 2], OSError),
        "cut.tif": (tiff[: len(tiff) // 2], OSError),
        "many_samples.tif": (bytes(many_samples), UnidentifiedImageError),
        "noise.gif": (b"GIF89a" + bytes(range(256)), UnidentifiedImageError),
        "empty.png": (b"", UnidentifiedImageError),
    }


def image_folder(cfg: DataConfig):
    """The folder prepared beside it (images as a tensor): what training reads."""
    root = Path(cfg.root)
    out = root.with_name(f"{root.name}-prepared")
    prepared = write_prepared(data_source(cfg), out, cfg.resolution, cfg.channels)
    return SimpleNamespace(images=torch.from_numpy(np.array(prepared.images)),
                           labels=torch.from_numpy(prepared.labels), num_classes=prepared.num_classes)  # fmt: skip


def folder_cfg(root, resolution=4, channels=1) -> DataConfig:
    return DataConfig(
        name="image_folder", root=str(root), resolution=resolution, channels=channels, limit=None
    )


def test_bombs_and_corrupted_files_are_skipped_and_counted(tmp_path, capsys):
    for i in range(3):
        Image.fromarray(np.full((4, 4), 10 * i + 5, np.uint8)).save(tmp_path / f"good{i}.png")
    hostile = hostile_files()
    for name, (data, raises) in hostile.items():
        (tmp_path / name).write_bytes(data)
        with warnings.catch_warnings(), pytest.raises(raises):
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(tmp_path / name) as img:
                img.load()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning, or any other, fails the test
        data = image_folder(folder_cfg(tmp_path))
    assert data.images.shape == (3, 1, 4, 4)
    assert sorted(data.images[:, 0, 0, 0].tolist()) == [5, 15, 25]
    out, err = capsys.readouterr()
    assert f"skipped {len(hostile)} unreadable image file(s)" in out
    assert out.count("\n") == 1 and err == ""


@pytest.mark.parametrize("color_type, channels", [(0, 1), (4, 2), (2, 3), (6, 4)])
def test_16_bit_png_keeps_the_high_byte(tmp_path, color_type, channels):
    values = np.array([[0, 255, 256], [1000, 32767, 32768], [65280, 65535, 51400]], dtype=np.uint16)
    samples = np.repeat(values[..., None], channels, axis=-1)  # the same value in every channel and alpha
    (tmp_path / "deep.png").write_bytes(
        png_bytes(3, 3, 16, color_type, (row.astype(">u2").tobytes() for row in samples))
    )
    data = image_folder(folder_cfg(tmp_path, resolution=3))
    assert data.images[0, 0].tolist() == [[0, 0, 1], [3, 127, 128], [255, 255, 200]]  # values >> 8


def test_float_and_32_bit_tiffs_are_scaled(tmp_path):
    floats = np.array([[0.0, 0.25, 0.5], [1.0, 2.0, -1.0], [np.nan, 1 / 255, 0.999]], dtype=np.float32)
    ints = np.array([[0, 255, 256], [65535, 70000, -5], [32768, 1000, 65280]], dtype=np.int32)
    for name, pixels in (("a", floats), ("b", ints)):
        (tmp_path / name).mkdir()
        Image.fromarray(pixels).save(tmp_path / name / "0.tif")
    assert [Image.open(tmp_path / name / "0.tif").mode for name in "ab"] == ["F", "I"]
    data = image_folder(folder_cfg(tmp_path, resolution=3))
    assert data.labels.tolist() == [0, 1]
    assert data.images[0, 0].tolist() == [[0, 64, 128], [255, 255, 0], [0, 1, 255]]  # [0, 1] * 255; NaN -> 0
    assert data.images[1, 0].tolist() == [[0, 0, 1], [255, 255, 0], [128, 3, 255]]  # as 16-bit: >> 8, clipped


def test_16_bit_gray_as_rgb(tmp_path):
    Image.fromarray(np.full((2, 2), 51400, np.uint16)).save(tmp_path / "deep.png")
    data = image_folder(folder_cfg(tmp_path, resolution=2, channels=3))
    assert data.images.shape == (1, 3, 2, 2) and data.images.unique().tolist() == [200]


def test_empty_class_folders_are_refused_by_name(tmp_path):
    for name in ("apples", "cherries"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name / "0.png")
    (tmp_path / "bananas").mkdir()  # no image at all
    (tmp_path / "dates").mkdir()
    (tmp_path / "dates" / "0.png").write_bytes(b"not a png")  # no readable image
    with pytest.raises(GanError) as err:
        image_folder(folder_cfg(tmp_path))
    message = str(err.value)
    assert "'bananas'" in message and "'dates'" in message and "apples" not in message
    assert str(tmp_path) in message and "\n" not in message


def test_hidden_folders_and_files_are_not_data(tmp_path):
    for name in ("apples", ".thumbnails", "cherries"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.full((4, 4), len(name), np.uint8)).save(tmp_path / name / "0.png")
    (tmp_path / ".empty").mkdir()  # would be refused as an empty class if it counted
    (tmp_path / "apples" / "._0.png").write_bytes(b"\0\5\26\7")  # macOS AppleDouble file, not an image
    data = image_folder(folder_cfg(tmp_path))
    assert data.num_classes == 2 and data.labels.tolist() == [0, 1]
    assert data.images[:, 0, 0, 0].tolist() == [len("apples"), len("cherries")]


def test_symlinked_class_folder_is_read(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    Image.fromarray(np.full((4, 4), 7, np.uint8)).save(store / "0.png")
    root = tmp_path / "root"
    (root / "apples").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "apples" / "0.png")
    (root / "bananas").symlink_to(store, target_is_directory=True)
    data = image_folder(folder_cfg(root))
    assert data.labels.tolist() == [0, 1] and data.images[1, 0, 0, 0] == 7


def test_training_on_a_folder_with_a_bomb_skips_it_quietly(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((6, 6), 40 * i, np.uint8)).save(folder / f"{i}.png")
    for name in ("bomb.png", "many_samples.tif"):
        (folder / name).write_bytes(hostile_files()[name][0])
    proc = run([PYTHON, "train.py", "--config", "configs/dcgan_mnist.yaml", "--run-dir", tmp_path / "run",
                "data.name=image_folder", f"data.root={folder}", "train.steps=1", "train.batch_size=2",
                "train.checkpoint_every=1", "train.sample_every=1", "train.log_every=1", "model.g_channels=4",
                "model.d_channels=4", "wandb.mode=disabled"], timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped 2 unreadable image file(s)" in proc.stdout
    assert "Traceback" not in proc.stderr and "DecompressionBomb" not in proc.stderr
    assert "samples per pixel" not in proc.stderr  # PIL's log line for the TIFF
    assert (tmp_path / "run" / "FINISHED").read_text().strip() == "1"
