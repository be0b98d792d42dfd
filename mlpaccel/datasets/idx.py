"""MNIST and Fashion-MNIST from the standard IDX files (gzipped or raw), md5-verified.

IDX format: a big-endian header ``0x00 0x00 <type> <ndim>``, then ``ndim`` uint32 sizes, then
the data. Images are type 0x08 (uint8), ndim 3 (magic 2051); labels ndim 1 (magic 2049).

Where the files are looked for, in order: the ``path`` argument, else the environment variable
``MLPACCEL_DATA``, else ``mlpaccel._paths.cache_dir() / "datasets"``. Inside that folder both
``<folder>/<set name>/<file>`` and ``<folder>/<file>`` are accepted, as ``.gz`` or decompressed.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .download import download as _download
from .download import md5sum
from .errors import ChecksumError, DatasetFormatError, DatasetNotFoundError

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


@dataclass(frozen=True)
class IdxSet:
    """One IDX data set: its folder name, mirrors and the md5 of each file (.gz and raw)."""

    name: str
    mirrors: tuple[str, ...]
    md5_gz: dict
    md5_raw: dict


# md5 of the .gz files: the published lists (torchvision's MNIST / FashionMNIST resources);
# verified against the copies in ../shared/data. md5 of the decompressed files: computed from
# those verified .gz files, so a user's unpacked copy is checked as well.
MNIST = IdxSet(
    name="mnist",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    md5_gz={
        TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
        TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
        TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
    },
    md5_raw={
        TRAIN_IMAGES: "6bbc9ace898e44ae57da46a324031adb",
        TRAIN_LABELS: "a25bea736e30d166cdddb491f175f624",
        TEST_IMAGES: "2646ac647ad5339dbf082846283269ea",
        TEST_LABELS: "27ae3e4e09519cfbb04c329615203637",
    },
)

FASHION_MNIST = IdxSet(
    name="fashion-mnist",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ),
    md5_gz={
        TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
        TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
        TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
    },
    md5_raw={
        TRAIN_IMAGES: "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        TRAIN_LABELS: "9018921c3c673c538a1fc5bad174d6f9",
        TEST_IMAGES: "8181f5470baa50b63fa0f6fddb340f0a",
        TEST_LABELS: "15d484375f8d13e6eb1aabb0c3f46965",
    },
)

#: Fashion-MNIST's class names, in label order
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The folder datasets are read from: ``path``, else $MLPACCEL_DATA, else the cache."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("MLPACCEL_DATA")
    if env:
        return Path(env).expanduser()
    from .._paths import cache_dir

    return cache_dir() / "datasets"


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode an IDX byte string into an array of its declared dtype and shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetFormatError(f"{source}: not an IDX file (bad magic {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetFormatError(f"{source}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DatasetFormatError(f"{source}: {len(data)} bytes, the header {shape} implies "
                                 f"{expected} (truncated or padded file)")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _locate(spec: IdxSet, root: Path, stem: str) -> Path | None:
    for folder in (root / spec.name, root):
        for name in (stem + ".gz", stem):
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def _read_verified(spec: IdxSet, file: Path, stem: str, verify: bool) -> np.ndarray:
    gz = file.suffix == ".gz"
    if verify:
        expected = (spec.md5_gz if gz else spec.md5_raw)[stem]
        actual = md5sum(file)
        if actual != expected:
            raise ChecksumError(
                f"{file}: md5 {actual} differs from the published {expected} for "
                f"{spec.name} {stem}{'.gz' if gz else ''}; the file is truncated, corrupted "
                f"or not the original. Delete it and download again (download=True).")
    opener = gzip.open if gz else open
    try:
        with opener(file, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DatasetFormatError(f"{file}: cannot read ({exc})") from exc
    return parse_idx(raw, str(file))


def load_idx_set(spec: IdxSet, path=None, flatten: bool = True, normalize: bool = True,
                 dtype="float32", download: bool = False, mirrors=None, verify: bool = True,
                 progress: bool = True):
    """Shared body of :func:`mnist` and :func:`fashion_mnist` (see there)."""
    root = data_root(path)
    found = {stem: _locate(spec, root, stem) for stem in FILES}
    missing = [stem for stem, f in found.items() if f is None]
    if missing and download:
        for stem in missing:
            found[stem] = _download(stem + ".gz", root / spec.name,
                                    mirrors if mirrors is not None else spec.mirrors,
                                    md5=spec.md5_gz[stem], progress=progress)
    elif missing:
        raise DatasetNotFoundError(
            f"{spec.name}: missing {', '.join(m + '[.gz]' for m in missing)} in "
            f"{root / spec.name} and {root} (from {_root_origin(path)}). Pass download=True, "
            f"or point path= / MLPACCEL_DATA at a folder holding the four IDX files.")
    arrays = {stem: _read_verified(spec, found[stem], stem, verify) for stem in FILES}
    result = []
    for img_stem, lab_stem in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        images, labels = arrays[img_stem], arrays[lab_stem]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetFormatError(f"{spec.name}: images {images.shape} and labels "
                                     f"{labels.shape} do not pair up")
        if flatten:
            images = images.reshape(len(images), -1)
        if normalize:
            images = images.astype(dtype) / np.asarray(255, dtype=dtype)
        result.append((images, labels.astype(np.int64)))
    return tuple(result)


def _root_origin(path) -> str:
    if path is not None:
        return "the path argument"
    return "$MLPACCEL_DATA" if os.environ.get("MLPACCEL_DATA") else "the cache folder"


def _check_float_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"dtype must be a float dtype when normalize=True, got {dt.name!r}; "
                        f"use normalize=False for the raw uint8 pixels")
    return dt


def mnist(path=None, flatten: bool = True, normalize: bool = True, dtype="float32",
          download: bool = False, mirrors=None, verify: bool = True, progress: bool = True):
    """MNIST as ``((X_train, y_train), (X_test, y_test))``, like ``keras.datasets.mnist``.

    X: (60000, 784) / (10000, 784) when ``flatten`` else (n, 28, 28); uint8 pixels 0..255
    when ``normalize`` is False, else pixels / 255 in ``dtype`` (float32 by default).
    y: int64 digits 0..9. Every file's md5 is checked against the published value
    (``verify=False`` skips that). ``download=True`` fetches missing files from ``mirrors``
    (default :data:`MNIST.mirrors`) into ``<data root>/mnist/``."""
    if normalize:
        dtype = _check_float_dtype(dtype)
    return load_idx_set(MNIST, path, flatten, normalize, dtype, download, mirrors, verify,
                        progress)


def fashion_mnist(path=None, flatten: bool = True, normalize: bool = True, dtype="float32",
                  download: bool = False, mirrors=None, verify: bool = True,
                  progress: bool = True):
    """Fashion-MNIST, same shapes and arguments as :func:`mnist`; class names in
    :data:`FASHION_CLASSES`; files under ``<data root>/fashion-mnist/``."""
    if normalize:
        dtype = _check_float_dtype(dtype)
    return load_idx_set(FASHION_MNIST, path, flatten, normalize, dtype, download, mirrors,
                        verify, progress)
