"""Data for the curriculum: logic gates, Playground 2-D sets, blobs, digits, MNIST, CSV.

>>> from mlpaccel import datasets
>>> X, y = datasets.spiral(500, noise=0.1, random_state=0)       # (500, 2), (500,)
>>> (X_train, y_train), (X_test, y_test) = datasets.mnist()      # Keras-style tuples

Every loader returns NumPy arrays: features float (or uint8 pixels on request), labels int64.
"""

from __future__ import annotations

from .._names import unknown_name
from .download import download, md5sum
from .errors import (
    ChecksumError,
    DatasetError,
    DatasetFormatError,
    DatasetNotFoundError,
    DownloadError,
)
from .idx import FASHION_CLASSES, FASHION_MNIST, MNIST, data_root, fashion_mnist, mnist, parse_idx
from .synthetic import (
    GATES,
    PLAYGROUND,
    blobs,
    circle,
    gauss,
    logic_gate,
    make_classification,
    spiral,
    xor,
)
from .tabular import digits, load_csv, standardize, train_test_split

#: every named set :func:`load` knows; gates are ``gate-<name>`` (e.g. ``gate-xnor``)
NAMES = ("circle", "xor", "gauss", "spiral", "blobs", "digits", "mnist", "fashion-mnist",
         *(f"gate-{g}" for g in GATES))


def load(name: str, **kwargs):
    """Load a set by name as ``(X, y)``, or ``((X_train, y_train), (X_test, y_test))`` for
    mnist / fashion-mnist. ``kwargs`` go to the generator or loader."""
    key = str(name).lower().replace("_", "-")
    if key in PLAYGROUND:
        return PLAYGROUND[key](**kwargs)
    if key in ("blobs", "make-classification"):
        return make_classification(**kwargs)
    if key == "digits":
        return digits(**kwargs)
    if key == "mnist":
        return mnist(**kwargs)
    if key == "fashion-mnist":
        return fashion_mnist(**kwargs)
    if key.startswith("gate-") and key[5:] in GATES:
        return logic_gate(key[5:], **kwargs)
    raise ValueError(unknown_name("dataset", name, NAMES, key=key))


__all__ = [
    "FASHION_CLASSES", "FASHION_MNIST", "GATES", "MNIST", "NAMES", "PLAYGROUND",
    "ChecksumError", "DatasetError", "DatasetFormatError", "DatasetNotFoundError",
    "DownloadError", "blobs", "circle", "data_root", "digits", "download", "fashion_mnist",
    "gauss", "load", "load_csv", "logic_gate", "make_classification", "md5sum", "mnist",
    "parse_idx", "spiral", "standardize", "train_test_split", "xor",
]
