"""Typed errors of :mod:`mlpaccel.datasets`; each message says what to do next."""

from __future__ import annotations

from ..errors import MLPAccelError


class DatasetError(MLPAccelError):
    """Base class of every error the dataset loaders raise on purpose."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset's files are not where we looked (the message lists the places)."""


class ChecksumError(DatasetError, ValueError):
    """A file's md5 differs from the published one (truncated, corrupted or another file)."""


class DatasetFormatError(DatasetError, ValueError):
    """A file is not in the expected format (bad IDX magic, ragged CSV, non-numeric cell...)."""


class DownloadError(DatasetError, OSError):
    """Every mirror failed (offline, blocked, or the files changed); the message lists why."""
