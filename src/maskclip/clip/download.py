"""Fetch a checkpoint over HTTP into a cache directory: resumable, checksummed, atomic.

The bytes go to `<name>.part` first; an interrupted download keeps that file and the next call
asks the server for the rest with an HTTP Range request. Only a file whose SHA-256 matches is
renamed (os.replace) to its final name, so a file under its final name is always complete.
No torch here: this is plain I/O that the tests drive against a local HTTP server.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 20
USER_AGENT = "maskclip (+https://github.com/openai/CLIP weights)"
_WEIGHTS_HINT = "pass a local copy with --weights PATH (Python: load_clip(PATH))"


class WeightsError(RuntimeError):
    """Weights could not be found, fetched, verified or read; the message says what to do."""


class DownloadError(WeightsError):
    """The server could not be reached or the transfer broke off (a `.part` file may be kept)."""

    def __init__(self, message: str, url: str, path: Path, part: Path):
        super().__init__(message)
        self.url, self.path, self.part = url, path, part


class ChecksumError(WeightsError):
    """The downloaded bytes do not have the expected SHA-256 (nothing was put in place)."""

    def __init__(self, message: str, url: str, path: Path):
        super().__init__(message)
        self.url, self.path = url, path


def file_sha256(path: str | os.PathLike, chunk: int = CHUNK) -> str:
    """Hex SHA-256 of a file, read in chunks (weights files are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def url_filename(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ValueError(f"cannot derive a file name from URL {url!r}")
    return name


class _Interrupted(Exception):
    """The transfer stopped early; carries a human-readable reason."""


def _content_range_start(header: str | None) -> int | None:
    m = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", header or "")
    return int(m.group(1)) if m else None


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> str:
    """Complete `part` from `url` (resuming if it exists); return the SHA-256 of the whole file."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # the .part already holds at least the whole file (or the server changed it): start over
            e.close()
            part.unlink()
            return _fetch(url, part, progress, timeout)
        raise
    with response:
        if offset and (response.status != 206 or
                       _content_range_start(response.headers.get("Content-Range")) != offset):
            offset = 0  # the server ignored the Range header and sends the whole file: restart
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        h = hashlib.sha256()
        if offset:
            with open(part, "rb") as f:
                while block := f.read(CHUNK):
                    h.update(block)
        total = offset + expected if expected is not None else None
        received = 0
        with open(part, "ab" if offset else "wb") as f, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=part.name.removesuffix(".part"), disable=not progress, leave=False) as bar:
            while block := response.read(CHUNK):
                f.write(block)
                h.update(block)
                received += len(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
        # http.client returns b"" on a dropped connection instead of raising: check the length here
        if expected is not None and received < expected:
            raise _Interrupted(f"connection closed after {offset + received} of {total} bytes")
    return h.hexdigest()


def download(url: str, root: str | os.PathLike, sha256: str | None = None, progress: bool = True,
             filename: str | None = None, timeout: float = 30.0) -> Path:
    """Download `url` into `root` (or return the cached copy) and verify its SHA-256.

    A cached file whose checksum does not match is stale: a warning names it, it is moved aside to
    `<name>.corrupt` (kept until a good download replaces it) and the file is downloaded again.
    On failure a `DownloadError` (unreachable, broken off: the `.part` stays for resuming) or
    `ChecksumError` (bytes discarded) names the URL, the cache path and `--weights`.
    """
    root = Path(root).expanduser()
    target = root / (filename or url_filename(url))
    sha256 = sha256.lower() if sha256 else None
    aside = target.with_name(target.name + ".corrupt")
    if target.is_file():
        if sha256 is None or file_sha256(target) == sha256:
            return target
        os.replace(target, aside)  # never used again, never deleted before a good copy replaces it
        warnings.warn(f"{target}: cached file does not have SHA-256 {sha256}; kept aside as {aside} and "
                      f"downloading it again from {url}", stacklevel=2)
    part = target.with_name(target.name + ".part")
    kept_aside = f"\n  the corrupt cached copy is kept aside as {aside}" if aside.exists() else ""
    try:
        root.mkdir(parents=True, exist_ok=True)
        digest = _fetch(url, part, progress, timeout)
    except (_Interrupted, OSError, http.client.HTTPException) as e:  # URLError, timeouts are OSErrors
        reason = getattr(e, "reason", None) if isinstance(e, urllib.error.URLError) else None
        kept = part.stat().st_size if part.exists() else 0
        keep = (f"\n  partial download kept: {part} ({kept} bytes; running again resumes it)" if kept else "")
        raise DownloadError(
            f"could not download {url}: {reason or e}\n  cache path: {target}{keep}{kept_aside}\n"
            f"  without network access, download the file elsewhere and {_WEIGHTS_HINT}",
            url, target, part) from None
    if sha256 is not None and digest != sha256:
        part.unlink()
        raise ChecksumError(
            f"checksum mismatch for {url}: expected SHA-256 {sha256}, got {digest}\n"
            f"  the download was discarded; nothing was written to the cache path {target}{kept_aside}\n"
            f"  retry later, or {_WEIGHTS_HINT}", url, target)
    os.replace(part, target)
    aside.unlink(missing_ok=True)  # a good copy is in place now
    return target
