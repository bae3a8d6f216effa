"""Fetch the official Amazon Reviews 2023 files: streamed, resumable and checked by sha256.

The metadata file is 1.1 GB, so a download must survive interruptions and must never pass a
truncated or corrupted file off as the real one. Each file streams into ``<name>.part``; a rerun
continues it with an HTTP Range request; only a file whose sha256 matches the published value is
renamed to its final name. A bad ``.part`` is deleted, so the next run starts clean.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from data.jsonl import DataError
from data.raw import find_file

# Git-LFS oids of the official files in McAuley-Lab/Amazon-Reviews-2023 (see the SOURCE.md of
# amazon23-scientific). Other categories have no entry: their computed hash is printed instead.
KNOWN_SHA256 = {
    "Industrial_and_Scientific.test.csv": (
        "025cd874564c1191b48c62601ef55ce5e55154e19c38a6d05c395574a6175a9b"
    ),
    "Industrial_and_Scientific.valid.csv": (
        "420b8271bf504d5409c70473db6656835611c407c3a8ae574ed47ae216281d7c"
    ),
    "meta_Industrial_and_Scientific.jsonl": (
        "114fcde36f6205bde5d0ebed24613a35e475aa06b285011ed1e892dc26da3942"
    ),
}
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
USER_AGENT = "genrec-download/1.0"


class DownloadError(DataError):
    """A file that could not be fetched or failed its check; the message names the file or URL."""


def amazon23_urls(base_url: str, category: str) -> dict[str, str]:
    """File name -> URL of the three official files one category needs."""
    base = base_url.rstrip("/")
    bench = f"{base}/benchmark/5core/last_out_w_his"
    return {
        f"{category}.valid.csv": f"{bench}/{category}.valid.csv",
        f"{category}.test.csv": f"{bench}/{category}.test.csv",
        f"meta_{category}.jsonl": f"{base}/raw/meta_categories/meta_{category}.jsonl",
    }


def download_amazon23(base_url: str, raw_dir: Path, category: str) -> list[Path]:
    """Fetch whichever of the category's files is absent from ``raw_dir`` (plain or ``.gz``).

    Returns the paths of all three files, present or fetched.
    """
    raw_dir = Path(raw_dir)
    paths = []
    for name, url in amazon23_urls(base_url, category).items():
        present = find_file(raw_dir, name)
        if present is not None:
            print(f"  {present.name}: already present, not downloaded")
            paths.append(present)
        else:
            paths.append(fetch(url, raw_dir / name, KNOWN_SHA256.get(name)))
    return paths


def fetch(url: str, dest: Path, sha256: str | None) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming it if one exists."""
    part = dest.with_name(dest.name + ".part")
    _make_dir(dest.parent)
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open_url(url, offset)
    except _NothingLeft as err:
        if err.size == offset:  # an earlier run got every byte but stopped before the rename
            with open(part, "rb") as f:
                _install(part, dest, url, sha256, hashlib.file_digest(f, "sha256").hexdigest())
            return dest
        part.unlink()  # longer than the file: not a prefix of it, so start over
        offset = 0
        response = _open_url(url, 0)
    with response:
        got = _stream(response, url, part, offset)
    _install(part, dest, url, sha256, got)
    return dest


class _NothingLeft(Exception):
    """HTTP 416 to a Range request; ``size`` is the file's length when the server says it."""

    def __init__(self, size: int | None) -> None:
        super().__init__(size)
        self.size = size


def _make_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"{folder}: cannot create the download folder ({err})") from err


def _open_url(url: str, offset: int) -> http.client.HTTPResponse:
    """The response, asking only for bytes ``offset..`` when resuming."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            size = err.headers.get("Content-Range", "").rpartition("/")[2]
            err.close()
            raise _NothingLeft(int(size) if size.isdigit() else None) from err
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except OSError as err:  # URLError, refused connections and timeouts are all OSErrors
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"{url}: cannot connect ({reason}); offline? Fetch the file by hand into the raw folder"
        ) from err


def _stream(response: http.client.HTTPResponse, url: str, part: Path, offset: int) -> str:
    """Append the body to ``part`` with a progress bar; return the sha256 of the whole file."""
    if offset and response.status != 206:
        print(f"  {url}: server ignored the Range request; downloading from the start")
        offset = 0
    elif offset:
        content_range = response.headers.get("Content-Range", "")
        if not content_range.startswith(f"bytes {offset}-"):
            raise DownloadError(f"{url}: asked for bytes {offset}- but got '{content_range}'")
    if offset:  # the bytes already on disk start the file's hash
        with open(part, "rb") as f:
            digest = hashlib.file_digest(f, "sha256")
    else:
        digest = hashlib.sha256()
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length is not None else None
    received = offset
    with (
        _open_part(part, "ab" if offset else "wb") as f,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.stem,
        ) as bar,
    ):
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as err:
                raise DownloadError(
                    f"{url}: interrupted after {received:,} bytes ({err}); "
                    f"run again to resume from {part}"
                ) from err
            if not chunk:
                break
            try:
                f.write(chunk)
            except OSError as err:
                raise DownloadError(f"{part}: cannot write ({err})") from err
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    if total is not None and received != total:
        raise DownloadError(
            f"{url}: connection closed after {received:,} of {total:,} bytes; "
            f"run again to resume from {part}"
        )
    return digest.hexdigest()


def _open_part(part: Path, mode: str) -> BinaryIO:
    try:
        return open(part, mode)  # closed by the caller's with-block
    except OSError as err:
        raise DownloadError(
            f"{part.parent}: cannot write the download there ({err.strerror or err}); "
            "the folder is read-only? Pass --raw_dir=<a writable folder>"
        ) from err


def _install(part: Path, dest: Path, url: str, expected: str | None, got: str) -> None:
    """Rename ``part`` to ``dest`` only if its hash is the published one; else delete it."""
    if expected is None:
        print(f"  {dest.name}: no published sha256 to check against; computed sha256 {got}")
    elif got != expected:
        part.unlink()
        raise DownloadError(
            f"{dest.name}: sha256 mismatch (expected {expected}, got {got}); downloaded from "
            f"{url}; the corrupt download was deleted, run again to retry"
        )
    os.replace(part, dest)
    print(f"  {dest}: downloaded, sha256 {got}")
