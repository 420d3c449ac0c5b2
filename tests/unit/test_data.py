"""Dataset loaders on real photos: CIFAR-10 batches and image folders built from sklearn samples.

scikit-learn ships two real RGB photos (china.jpg, flower.jpg, 427x640); crops of them are
written in the official CIFAR-10 python layout and as PNG/JPEG/BMP folders, then loaded back.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from optimizer.data.images import LOADERS, ImageData, load_cifar10, load_images
from optimizer.errors import DatasetError

from ..datasets import crop, sample_photos, write_cifar10, write_pickle

PER_BATCH = 2  # images per CIFAR batch file: 5 train batches -> 10 images, test_batch -> 2


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """The two bundled sample photos, each (427, 640, 3) uint8."""
    return sample_photos()


def _scaled(crop: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1], the loaders' convention."""
    return torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1)


@pytest.fixture(scope="module")
def cifar(photos, tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """cifar-10-batches-py/ with 5 train batches and a test batch; returns (dir, crops)."""
    folder = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    return folder, write_cifar10(folder, PER_BATCH, photos)


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- CIFAR-10 ---------------------------------------------------------------------------------


def test_cifar_round_trips_known_crops_in_file_order(cifar):
    folder, crops = cifar
    data = load_images("cifar10", 32, 3, root=str(folder))
    assert isinstance(data, ImageData) and data.name == "cifar10"
    assert data.images.shape == (5 * PER_BATCH, 3, 32, 32)
    assert data.images.dtype == torch.float32
    for i, want in enumerate(crops[:5 * PER_BATCH]):
        assert torch.allclose(data.images[i], _scaled(want), atol=1e-6, rtol=0)
    assert str(folder) in data.description and "10 images" in data.description
    again = load_images("cifar10", 32, 3, root=str(folder))
    assert torch.equal(data.images, again.images) and data.sha256 == again.sha256


def test_cifar_accepts_the_parent_folder_and_the_test_split(cifar):
    folder, crops = cifar
    data = load_cifar10(32, 3, root=str(folder.parent), split="test")
    assert data.images.shape == (PER_BATCH, 3, 32, 32)
    assert torch.allclose(data.images[0], _scaled(crops[5 * PER_BATCH]), atol=1e-6, rtol=0)
    assert "test split" in data.description and str(folder) in data.description


def test_cifar_64_is_bilinear_upscale_and_gray_is_luminance(cifar):
    folder, crops = cifar
    rgb32 = load_cifar10(32, 3, root=folder).images
    big = load_cifar10(64, 3, root=folder)
    assert big.images.shape == (5 * PER_BATCH, 3, 64, 64)
    assert big.images.min() >= -1 and big.images.max() <= 1
    expected = F.interpolate(rgb32, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(big.images, expected, atol=1e-6)
    assert "64x64" in big.description
    gray = load_cifar10(32, 1, root=folder).images
    assert gray.shape == (5 * PER_BATCH, 1, 32, 32)
    assert gray.min() >= -1 and gray.max() <= 1
    # Pillow's "L" uses the same BT.601 weights but rounds to a grey level: within one level.
    pil_gray = np.asarray(Image.fromarray(crops[0]).convert("L"), dtype=np.float32) / 127.5 - 1
    assert np.abs(gray[0, 0].numpy() - pil_gray).max() <= 1 / 127.5 + 1e-6


def test_cifar_reads_numpy1_and_protocol5_pickles(cifar, tmp_path):
    """The official files name numpy.core.multiarray; protocol 5 rebuilds via _frombuffer."""
    folder, crops = cifar
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        batch = pickle.loads((folder / name).read_bytes(), encoding="bytes")
        legacy = pickle.dumps(batch, protocol=2).replace(b"numpy._core.", b"numpy.core.")
        assert b"numpy.core.multiarray" in legacy
        (tmp_path / name).write_bytes(legacy if name != "data_batch_5" else
                                      pickle.dumps(batch, protocol=5))
    data = load_cifar10(32, 3, root=tmp_path)
    for i, want in enumerate(crops[:5 * PER_BATCH]):
        assert torch.allclose(data.images[i], _scaled(want), atol=1e-6, rtol=0)


class _RunsShellCommand:
    """Unpickles into os.system(command): what a malicious 'batch' would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_cifar_refuses_forbidden_global_without_executing_it(cifar, tmp_path):
    folder, _ = cifar
    for name in [f"data_batch_{i}" for i in range(2, 6)]:
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    marker = tmp_path / "executed"
    evil = {b"data": _RunsShellCommand(f"touch {marker}"), b"labels": [0]}
    write_pickle(tmp_path / "data_batch_1", evil)
    with pytest.raises(DatasetError) as excinfo:
        load_cifar10(32, 3, root=tmp_path)
    message = _one_line_error(excinfo)
    assert f"{tmp_path / 'data_batch_1'}" in message and "system" in message
    assert "refused" in message and "b'data'" in message
    assert not marker.exists()


def test_cifar_missing_or_incomplete_root_names_the_layout(cifar, tmp_path):
    with pytest.raises(DatasetError) as excinfo:
        load_images("cifar10", 32, 3)
    assert "data_batch_1..data_batch_5" in _one_line_error(excinfo)

    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as excinfo:
        load_images("cifar10", 32, 3, root=str(missing))
    message = _one_line_error(excinfo)
    assert str(missing) in message and "cifar-10-batches-py/" in message

    folder, _ = cifar
    (tmp_path / "data_batch_1").write_bytes((folder / "data_batch_1").read_bytes())
    with pytest.raises(DatasetError) as excinfo:
        load_images("cifar10", 32, 3, root=str(tmp_path))
    message = _one_line_error(excinfo)
    assert str(tmp_path) in message and "data_batch_2, data_batch_3" in message
    assert "data_batch_1," not in message and "test_batch" in message


@pytest.mark.parametrize("content, found", [
    (b"this is not a pickle", "not a CIFAR-10 python batch"),
    ([1, 2, 3], "a list, not a dict"),
    ({b"labels": [0]}, "b'data' of type NoneType"),
    ({b"data": np.zeros((1, 1024), np.uint8), b"labels": [0]}, "b'data' of uint8 (1, 1024)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but b'labels'"),
])
def test_cifar_malformed_batches_are_refused(cifar, tmp_path, content, found):
    folder, _ = cifar
    for name in [f"data_batch_{i}" for i in range(2, 6)]:
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    target = tmp_path / "data_batch_1"
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        write_pickle(target, content)
    with pytest.raises(DatasetError) as excinfo:
        load_cifar10(32, 3, root=tmp_path)
    message = _one_line_error(excinfo)
    assert str(target) in message and found in message and "N x 3072 uint8" in message


def test_cifar_bad_split_size_and_channels(cifar):
    folder, _ = cifar
    with pytest.raises(DatasetError, match=r"split must be one of \['test', 'train'\]"):
        load_cifar10(32, 3, root=folder, split="validation")
    with pytest.raises(DatasetError, match=r"image_size must be one of \[32, 64\], got 48"):
        load_cifar10(48, 3, root=folder)
    with pytest.raises(DatasetError, match="channels must be 1 .* or 3 .*, got 4"):
        load_cifar10(32, 4, root=folder)


# --- image folders ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(photos, tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """Real crops as PNG/JPEG/BMP, one nested two levels deep, plus a corrupt file and a .txt.

    Sorted relative paths: a_tall.png, b_wide.jpg, broken.jpg, sub/c_square.png,
    sub/deeper/d_square.bmp. Returns (root, the crops written losslessly, by file stem).
    """
    root = tmp_path_factory.mktemp("images")
    (root / "sub" / "deeper").mkdir(parents=True)
    crops = {
        "a_tall": crop(photos, 0, height=48, width=32),  # center square: rows 8..40
        "c_square": crop(photos, 1),
        "d_square": crop(photos, 2),
    }
    Image.fromarray(crops["a_tall"]).save(root / "a_tall.png")
    Image.fromarray(crop(photos, 3, height=60, width=90)).save(root / "b_wide.jpg", quality=90)
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    (root / "notes.txt").write_text("not an image, not counted")
    Image.fromarray(crops["c_square"]).save(root / "sub" / "c_square.png")
    Image.fromarray(crops["d_square"]).save(root / "sub" / "deeper" / "d_square.bmp")
    return root, crops


def test_folder_loads_recursively_sorted_and_skips_the_corrupt_file(folder, caplog):
    root, crops = folder
    with caplog.at_level(logging.WARNING, logger="optimizer.data.images"):
        data = load_images("folder", 32, 3, root=str(root))
    assert data.name == "folder" and data.images.shape == (4, 3, 32, 32)
    assert data.images.dtype == torch.float32
    assert data.images.min() >= -1 and data.images.max() <= 1
    # lossless files round-trip exactly; the tall one is center-cropped to its middle rows
    assert torch.allclose(data.images[0], _scaled(crops["a_tall"][8:40]), atol=1e-6, rtol=0)
    assert torch.allclose(data.images[2], _scaled(crops["c_square"]), atol=1e-6, rtol=0)
    assert torch.allclose(data.images[3], _scaled(crops["d_square"]), atol=1e-6, rtol=0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 1 unreadable image file(s) of 5" in warnings[0]
    assert "broken.jpg" in warnings[0]
    assert str(root) in data.description and "4 images" in data.description
    assert "1 unreadable skipped" in data.description
    again = load_images("folder", 32, 3, root=str(root))
    assert torch.equal(data.images, again.images) and data.sha256 == again.sha256


def test_folder_limit_counts_readable_images_and_celeba_is_an_alias(folder, caplog):
    root, crops = folder
    first_two = load_images("folder", 32, 3, root=str(root), limit=2)
    assert first_two.images.shape == (2, 3, 32, 32) and not caplog.records  # stopped early
    three = load_images("celeba", 64, 3, root=str(root), limit=3)  # skips broken.jpg
    assert three.name == "celeba" and three.images.shape == (3, 3, 64, 64)
    full = load_images("folder", 64, 3, root=str(root))
    assert torch.equal(three.images, full.images[:3])
    assert "first 3 readable" in three.description and "64x64" in three.description


def test_folder_gray_is_luminance(folder):
    root, crops = folder
    gray = load_images("folder", 32, 1, root=str(root), limit=1).images
    assert gray.shape == (1, 1, 32, 32)
    pil_gray = (np.asarray(Image.fromarray(crops["a_tall"][8:40]).convert("L"), np.float32)
                / 127.5 - 1)
    assert np.abs(gray[0, 0].numpy() - pil_gray).max() <= 1 / 127.5 + 1e-6


def test_folder_errors_name_the_path_and_layout(tmp_path):
    with pytest.raises(DatasetError) as excinfo:
        load_images("celeba", 64, 3)
    assert "img_align_celeba/" in _one_line_error(excinfo)

    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as excinfo:
        load_images("folder", 64, 3, root=str(missing))
    message = _one_line_error(excinfo)
    assert str(missing) in message and "not a directory" in message and ".webp" in message

    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError) as excinfo:
        load_images("folder", 64, 3, root=str(tmp_path))
    message = _one_line_error(excinfo)
    assert str(tmp_path) in message and "holds no image files" in message

    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DatasetError) as excinfo:
        load_images("folder", 64, 3, root=str(tmp_path))
    message = _one_line_error(excinfo)
    assert "none of the 1 image files could be read" in message
    assert str(tmp_path / "bad.png") in message

    for bad in (0, -3, 2.5, True):
        with pytest.raises(DatasetError, match="limit must be a positive integer"):
            load_images("folder", 64, 3, root=str(tmp_path), limit=bad)


# --- dispatch ---------------------------------------------------------------------------------


def test_dispatch_names_datasets_and_options():
    assert set(LOADERS) == {"digits", "cifar10", "folder", "celeba"}
    with pytest.raises(DatasetError, match=r"unknown image dataset 'mnist'; known: \["):
        load_images("mnist", 32, 1)
    with pytest.raises(DatasetError) as excinfo:
        load_images("cifar10", 32, 3, root="/x", limit=5)
    assert "takes no option(s) ['limit']; it takes: ['split']" in _one_line_error(excinfo)
    with pytest.raises(DatasetError, match=r"'digits' takes no option\(s\) \['split'\]; .*none"):
        load_images("digits", 32, 1, split="train")


def test_digits_ignores_root():
    data = load_images("digits", 32, 1, root="/does/not/matter")
    assert data.images.shape == (1797, 1, 32, 32)
    assert data.images.min() >= -1 and data.images.max() <= 1
