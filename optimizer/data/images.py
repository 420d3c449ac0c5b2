"""Image datasets as (N, C, S, S) float32 tensors in [-1, 1], the range of DCGAN's Tanh.

`digits` is scikit-learn's bundled handwritten digits (1797 real 8x8 scans, 17 grey levels),
upscaled bilinearly: real data that needs no download, for the quick profile and the tests.

`cifar10` reads the official "CIFAR-10 python version" batches at a local root, through a
restricted unpickler that can only rebuild numpy arrays (unpickling runs code otherwise).

`folder` (alias `celeba`) reads any folder of images recursively with Pillow, center-crops each
to a square and resizes it bicubically; CelebA's `img_align_celeba/` works as it is.

Every user error (missing root, wrong layout, nothing readable) raises `DatasetError` with a
one-line message naming the path and the layout that was expected.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DatasetError

logger = logging.getLogger(__name__)

SIZES = (32, 64)  # what DCGANConfig builds; the loaders refuse anything else early
CHANNELS = (1, 3)
# ITU-R BT.601 luma weights: what Pillow's convert("L") uses, so gray matches common tooling.
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ImageData:
    name: str
    images: torch.Tensor  # (N, C, S, S) float32 in [-1, 1]
    description: str

    @property
    def sha256(self) -> str:
        """Content hash of the exact tensor trained on (recorded in the bundle's provenance)."""
        return hashlib.sha256(self.images.numpy().tobytes()).hexdigest()


# --- shared helpers ---------------------------------------------------------------------------


def _one_line(text: object) -> str:
    """Collapse a message to one line: the CLI prints each DatasetError as a single line."""
    return " ".join(str(text).split())


def _check_target(name: str, image_size: int, channels: int) -> None:
    """Refuse sizes and channel counts the DCGAN cannot take, before reading any file."""
    if image_size not in SIZES:
        raise DatasetError(f"{name}: image_size must be one of {list(SIZES)}, got {image_size!r}")
    if channels not in CHANNELS:
        raise DatasetError(f"{name}: channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")


def _uint8_to_unit(x: np.ndarray) -> torch.Tensor:
    """(N, 3, H, W) uint8 in [0, 255] -> (N, 3, H, W) float32 in [-1, 1].

    Dividing by 127.5 maps 0 and 255 exactly onto -1 and 1, so no clamp is needed.
    """
    return torch.from_numpy(x).float().div_(127.5).sub_(1.0)


def _to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, 3, H, W) RGB in [-1, 1] -> (N, channels, H, W): as is, or BT.601 luminance.

    Luminance is linear with weights summing to 1, so applying it in [-1, 1] equals applying it
    in [0, 1] and rescaling; the clamp only absorbs float32 rounding of that sum.
    """
    if channels == 3:
        return x
    r, g, b = LUMA
    gray = r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]
    return gray.clamp_(-1.0, 1.0)


def _resolve_root(name: str, root: str | Path | None, layout: str) -> Path:
    """The root as an existing directory, or a DatasetError naming the expected layout."""
    if root is None:
        raise DatasetError(f"{name} needs a root (data.root in the recipe): {layout}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{name} root {path} is not a directory; expected {layout}")
    return path


# --- digits -----------------------------------------------------------------------------------


def load_digits(image_size: int, channels: int = 1, root: str | None = None) -> ImageData:
    """scikit-learn digits as (1797, channels, image_size, image_size); `root` is ignored."""
    from sklearn.datasets import load_digits as sk_digits

    raw = sk_digits().images.astype(np.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    x = torch.from_numpy(raw)[:, None]  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = x.clamp(0, 1) * 2 - 1
    if channels == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    elif channels != 1:
        raise DatasetError(f"digits has 1 channel (or 3 by repetition), not {channels}")
    return ImageData("digits", x, f"scikit-learn digits, 8x8 upscaled to {image_size}x{image_size}")


# --- CIFAR-10 (python version) ----------------------------------------------------------------

CIFAR_SUBDIR = "cifar-10-batches-py"  # what cifar-10-python.tar.gz extracts to
CIFAR_SPLITS = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
CIFAR_LAYOUT = (f"a folder holding data_batch_1..data_batch_5 and test_batch (the CIFAR-10 "
                f"python version), or its parent holding {CIFAR_SUBDIR}/")
CIFAR_BATCH_LAYOUT = ("a pickled dict with b'data' (N x 3072 uint8: R, G, B planes of 32x32, "
                      "row-major) and b'labels' (N ints)")


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Stand-in for `_codecs.encode`, the way Python 3 writes bytes in pickle protocol <= 2.

    Only latin-1 is ever used there, so nothing else (no arbitrary codec lookups) is allowed.
    """
    spelled = str(encoding).lower().replace("-", "").replace("_", "")
    if not isinstance(text, str) or spelled not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not a bytes literal")
    return text.encode("latin-1")


def _numpy_core(module: str, name: str):
    """A numpy internal under its numpy 2 home (numpy._core), numpy 1's (numpy.core) otherwise.

    Resolving the `numpy.core.*` spelling of the official batches ourselves also avoids numpy 2's
    DeprecationWarning for importing `numpy.core`.
    """
    try:
        import numpy._core as core  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        import numpy.core as core
    return getattr(getattr(core, module), name)


_RECONSTRUCT = _numpy_core("multiarray", "_reconstruct")
_FROMBUFFER = _numpy_core("numeric", "_frombuffer")
# The only globals a CIFAR-10 batch needs: ndarray rebuilding (pickle protocols 0-4 use
# _reconstruct + ndarray + dtype, protocol 5 uses _frombuffer) and bytes under protocol <= 2.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 1.x writers (the official)
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 2.x writers
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("_codecs", "encode"): _latin1_encode,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals needed to rebuild arrays.

    `find_class` is the single place pickle turns a name into a callable, so refusing here
    means a crafted batch (e.g. one referring to os.system) is rejected before anything runs.
    """

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")  # keys were Python 2 str: keep them as bytes
        self.path = path

    def find_class(self, module: str, name: str):
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise DatasetError(
                f"cifar10 batch {self.path} refers to {module}.{name}, which a CIFAR-10 batch "
                f"never needs; refused without unpickling it (expected {CIFAR_BATCH_LAYOUT})")
        return found


def _find_cifar_dir(root: str | Path | None, batches: tuple[str, ...]) -> Path:
    """The folder holding `batches`: the root itself or its `cifar-10-batches-py/` child."""
    path = _resolve_root("cifar10", root, CIFAR_LAYOUT)
    for candidate in (path, path / CIFAR_SUBDIR):
        if all((candidate / b).is_file() for b in batches):
            return candidate
    missing = [b for b in batches if not (path / b).is_file()]
    raise DatasetError(f"cifar10 root {path} lacks {', '.join(missing)} (also not under "
                       f"{path / CIFAR_SUBDIR}); expected {CIFAR_LAYOUT}")


def _batch_problem(batch: object) -> str | None:
    """What is wrong with an unpickled batch, or None if it matches the official layout."""
    if not isinstance(batch, dict):
        return f"a {type(batch).__name__}, not a dict"
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray):
        return f"b'data' of type {type(data).__name__}"
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        return f"b'data' of {data.dtype} {data.shape}"
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data):
        return f"{len(data)} images but b'labels' of type {type(labels).__name__}"
    return None


def _read_cifar_batch(path: Path) -> np.ndarray:
    """One batch file -> (n, 3, 32, 32) uint8, checked against the official layout."""
    try:
        with path.open("rb") as f:
            batch = _BatchUnpickler(f, path).load()
    except DatasetError:
        raise
    except Exception as exc:  # a malformed pickle can raise almost anything; all mean "not a batch"
        raise DatasetError(f"cifar10 batch {path} is not a CIFAR-10 python batch "
                           f"({type(exc).__name__}: {_one_line(exc)}); "
                           f"expected {CIFAR_BATCH_LAYOUT}") from None
    problem = _batch_problem(batch)
    if problem is not None:
        raise DatasetError(f"cifar10 batch {path} holds {problem}; expected {CIFAR_BATCH_LAYOUT}")
    return batch[b"data"].reshape(-1, 3, 32, 32)  # rows are R, G, B planes of 32x32, row-major


def load_cifar10(image_size: int, channels: int = 3, root: str | None = None, *,
                 split: str = "train") -> ImageData:
    """CIFAR-10 python batches -> (N, channels, image_size, image_size) float32 in [-1, 1].

    split "train" reads data_batch_1..5 (50000 images), "test" reads test_batch (10000), in
    file order. 32x32 is returned as is; 64 is bilinear (no antialias: it only upsamples).
    """
    _check_target("cifar10", image_size, channels)
    batches = CIFAR_SPLITS.get(split) if isinstance(split, str) else None
    if batches is None:
        raise DatasetError(f"cifar10 split must be one of {sorted(CIFAR_SPLITS)}, got {split!r}")
    folder = _find_cifar_dir(root, batches)
    raw = np.concatenate([_read_cifar_batch(folder / b) for b in batches])  # (N, 3, 32, 32)
    x = _to_channels(_uint8_to_unit(raw), channels)
    if image_size != 32:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=False)
    notes = "" if image_size == 32 else f", upscaled bilinearly to {image_size}x{image_size}"
    notes += ", BT.601 luminance" if channels == 1 else ""
    description = (f"CIFAR-10 python version, {split} split ({', '.join(batches)}) at {folder}: "
                   f"{len(x)} images, 32x32 RGB{notes}")
    return ImageData("cifar10", x.contiguous(), description)


# --- image folders (CelebA) -------------------------------------------------------------------

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FOLDER_LAYOUTS = {
    "folder": "a folder of .jpg/.jpeg/.png/.bmp/.webp images, searched recursively",
    "celeba": ("CelebA's img_align_celeba/ folder of .jpg images (or its parent, or any folder "
               "of .jpg/.jpeg/.png/.bmp/.webp images, searched recursively)"),
}


def _image_files(name: str, root: Path) -> list[Path]:
    """Image files under root, recursively, sorted by relative path so order is reproducible."""
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise DatasetError(f"{name} root {root} holds no image files; "
                           f"expected {FOLDER_LAYOUTS[name]}")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_square(path: Path, image_size: int) -> np.ndarray:
    """One image file -> (S, S, 3) uint8: upright, RGB, center square crop, bicubic resize.

    For CelebA's 178x218 aligned faces the center square is the customary 178x178 face crop.
    Raises OSError/ValueError/... from Pillow when the file cannot be decoded.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()  # decode now, inside the caller's error handling
        im = ImageOps.exif_transpose(im)  # phone photos store rotation in EXIF
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")  # direct P -> RGB warns about byte transparency in Pillow
        im = im.convert("RGB")
        w, h = im.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        square = im.crop((left, top, left + side, top + side))
        # A same-size resize is an exact copy, so already-square SxS files round-trip unchanged.
        square = square.resize((image_size, image_size), Image.Resampling.BICUBIC)
        return np.asarray(square, dtype=np.uint8)


def _read_folder(name: str, root: Path, image_size: int,
                 limit: int | None) -> tuple[np.ndarray, int, int]:
    """Decode up to `limit` readable images -> ((n, 3, S, S) uint8, files_tried, skipped)."""
    from PIL import Image

    files = _image_files(name, root)
    wanted = len(files) if limit is None else min(limit, len(files))
    out = np.empty((wanted, image_size, image_size, 3), dtype=np.uint8)  # uint8: 4x less memory
    count, skipped, tried, first_error = 0, 0, 0, None
    for path in files:
        if count == wanted:
            break
        tried += 1
        try:
            out[count] = _read_square(path, image_size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            # One bad file should not sink a 200k-image dataset: count it and move on.
            skipped += 1
            reason = f"{path}: {type(exc).__name__}: {_one_line(exc)}"
            first_error = first_error or reason
            logger.debug("%s: skipping unreadable image %s", name, reason)
            continue
        count += 1
    if count == 0:
        raise DatasetError(f"{name} root {root}: none of the {tried} image files could be read "
                           f"(first: {first_error}); expected {FOLDER_LAYOUTS[name]}")
    if skipped:
        logger.warning("%s: skipped %d unreadable image file(s) of %d under %s (first: %s)",
                       name, skipped, tried, root, first_error)
    return out[:count].transpose(0, 3, 1, 2), tried, skipped  # NHWC -> NCHW view


def _check_limit(name: str, limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"{name}: limit must be a positive integer or None, got {limit!r}")


def _load_folder(name: str, image_size: int, channels: int, root: str | None,
                 limit: int | None) -> ImageData:
    """Shared body of `folder` and `celeba`: (N, channels, S, S) float32 in [-1, 1]."""
    _check_target(name, image_size, channels)
    _check_limit(name, limit)
    path = _resolve_root(name, root, FOLDER_LAYOUTS[name])
    raw, tried, skipped = _read_folder(name, path, image_size, limit)
    x = _to_channels(_uint8_to_unit(np.ascontiguousarray(raw)), channels)
    notes = f", first {limit} readable" if limit is not None else ""
    notes += f", {skipped} unreadable skipped" if skipped else ""
    notes += ", BT.601 luminance" if channels == 1 else ", RGB"
    description = (f"{name} images at {path}: {len(x)} images of {tried} files tried{notes}, "
                   f"center square crop, bicubic resize to {image_size}x{image_size}")
    return ImageData(name, x.contiguous(), description)


def load_folder(image_size: int, channels: int = 3, root: str | None = None, *,
                limit: int | None = None) -> ImageData:
    """Any folder of images (recursive, sorted) -> (N, channels, S, S) float32 in [-1, 1]."""
    return _load_folder("folder", image_size, channels, root, limit)


def load_celeba(image_size: int, channels: int = 3, root: str | None = None, *,
                limit: int | None = None) -> ImageData:
    """CelebA's img_align_celeba/ (178x218 faces) -> (N, channels, S, S), center 178x178 crop."""
    return _load_folder("celeba", image_size, channels, root, limit)


# --- dispatch ---------------------------------------------------------------------------------

LOADERS = {"digits": load_digits, "cifar10": load_cifar10, "folder": load_folder,
           "celeba": load_celeba}


def _options_of(loader) -> list[str]:
    """A loader's dataset-specific options: its keyword-only parameters (split, limit)."""
    params = inspect.signature(loader).parameters.values()
    return sorted(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def load_images(dataset: str, image_size: int, channels: int, root: str | None = None,
                **options) -> ImageData:
    """Load `dataset` as (N, channels, image_size, image_size) float32 in [-1, 1].

    `root` is the local path for datasets on disk (digits ignores it); `options` are the
    loader's keyword-only options: cifar10 takes split, folder and celeba take limit.
    """
    loader = LOADERS.get(dataset)
    if loader is None:
        raise DatasetError(f"unknown image dataset {dataset!r}; known: {sorted(LOADERS)}")
    known = _options_of(loader)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DatasetError(f"dataset {dataset!r} takes no option(s) {unknown}; "
                           f"it takes: {known or 'none'}")
    return loader(image_size, channels, root=root, **options)
