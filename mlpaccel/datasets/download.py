"""Fetch one file from a list of mirrors: md5-verified, atomic, with an optional progress bar.

Only the standard library does the network work (``urllib``); tqdm is used when installed.
A file appears under its final name only after its md5 matched: it is written to a temporary
file in the same folder and moved into place with ``os.replace`` (atomic on one filesystem),
so an interrupted download never leaves a half file that a later run would trust.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .errors import ChecksumError, DownloadError

log = logging.getLogger("mlpaccel.datasets")

_CHUNK = 1 << 16


def md5sum(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in 64 KiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _progress_bar(total: int | None, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the progress extra is optional
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                leave=False)


def _fetch_one(url: str, dest: Path, md5: str | None, timeout: float, progress: bool) -> None:
    """Download ``url`` to ``dest`` through a temp file; raise on HTTP/IO error or bad md5."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            bar = _progress_bar(int(length) if length else None, dest.name, progress)
            try:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        if md5 is not None and digest.hexdigest() != md5:
            raise ChecksumError(f"{url}: md5 {digest.hexdigest()} != expected {md5}")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download(filename: str, dest_dir: str | os.PathLike, mirrors, md5: str | None = None,
             timeout: float = 30.0, progress: bool = True) -> Path:
    """Fetch ``filename`` from the first mirror that serves it with the right md5.

    ``mirrors`` is a list of base URLs (``http(s)://`` or ``file://``) ending in ``/``; the URL
    tried is ``mirror + filename``. Returns the final path ``dest_dir / filename``. Raises
    DownloadError listing every mirror's failure when none worked."""
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the download folder {dest_dir}: {exc}; pass "
                            f"path= or set MLPACCEL_DATA to a writable folder") from exc
    dest = dest_dir / filename
    mirrors = [mirrors] if isinstance(mirrors, str) else list(mirrors)
    if not mirrors:
        raise DownloadError(f"no mirror given to download {filename}")
    failures = []
    for base in mirrors:
        url = base if base.endswith(filename) else base.rstrip("/") + "/" + filename
        log.info("downloading %s", url)
        try:
            _fetch_one(url, dest, md5, timeout, progress)
            return dest
        except ChecksumError as exc:
            failures.append(str(exc))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            failures.append(f"{url}: {type(exc).__name__}: {reason}")
    raise DownloadError(
        f"could not download {filename} from any mirror (offline?). Tried:\n  "
        + "\n  ".join(failures)
        + f"\nCopy the file into {dest_dir} yourself, or pass mirrors=[...] / set "
        "MLPACCEL_DATA to a folder that holds it.")
