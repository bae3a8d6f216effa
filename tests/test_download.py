"""data/download.py against a local HTTP server that serves the real benchmark files.

The server stands in for Hugging Face: it serves the decompressed official CSVs (whose sha256 is
the published one) under the official paths, honours Range requests unless told not to, and can
cut a response short to imitate a dropped connection.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from demo_support import free_port

from config import load_config
from data import download
from data.download import KNOWN_SHA256, DownloadError, amazon23_urls, download_amazon23
from data.paths import datasets_root
from data.pipeline import build_dataset
from data.raw import read_amazon23
from data.splits import load_items

CATEGORY = "Industrial_and_Scientific"
BENCH = "benchmark/5core/last_out_w_his"
META = f"meta_{CATEGORY}.jsonl"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class ServerState:
    """What the handler serves and what it saw; tests change the knobs between calls."""

    root: Path
    url: str = ""
    support_range: bool = True
    cut_after: int | None = None  # send only this many body bytes of the next response, once
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    body_bytes: int = 0

    def gets(self, name: str) -> list[str | None]:
        """Range headers of the requests for the file called ``name``."""
        return [rng for path, rng in self.requests if path.endswith("/" + name)]


class Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        state.requests.append((self.path, rng))
        path = state.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if rng and state.support_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.cut_after is not None:
            body, state.cut_after = body[: state.cut_after], None
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: fine here
            return
        state.body_bytes += len(body)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def served_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real decompressed test/valid CSVs and a small metadata file, under official paths."""
    root = tmp_path_factory.mktemp("hf")
    raw = datasets_root() / "amazon23-scientific" / "raw"
    bench = root / BENCH
    bench.mkdir(parents=True)
    for split in ("valid", "test"):
        with gzip.open(raw / f"{CATEGORY}.{split}.csv.gz", "rb") as src:
            (bench / f"{CATEGORY}.{split}.csv").write_bytes(src.read())
    first_row = (bench / f"{CATEGORY}.test.csv").read_text().splitlines()[1].split(",")
    meta = root / "raw" / "meta_categories" / META
    meta.parent.mkdir(parents=True)
    lines = [
        {
            "parent_asin": first_row[1],
            "title": "Lab stand",
            "main_category": "Industrial & Scientific",
            "categories": ["Industrial & Scientific", "Lab"],
            "features": ["steel"],
            "description": ["A sturdy stand."],
            "store": "Acme",
        },
        {"parent_asin": "NOT_IN_DATA", "title": "Ignored", "categories": []},
    ]
    meta.write_text("".join(json.dumps(obj) + "\n" for obj in lines))
    return root


@pytest.fixture
def server(served_root: Path) -> ServerState:
    state = ServerState(root=served_root)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = state  # type: ignore[attr-defined]
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def small_meta_hash(monkeypatch: pytest.MonkeyPatch, served_root: Path) -> str:
    """The published meta hash is for the 1.1 GB file; the served stand-in gets its own."""
    digest = sha256_of(served_root / "raw" / "meta_categories" / META)
    monkeypatch.setitem(KNOWN_SHA256, META, digest)
    return digest


def test_urls_follow_the_official_layout() -> None:
    urls = amazon23_urls("https://hf.example/resolve/main/", CATEGORY)
    assert urls == {
        f"{CATEGORY}.valid.csv": f"https://hf.example/resolve/main/{BENCH}/{CATEGORY}.valid.csv",
        f"{CATEGORY}.test.csv": f"https://hf.example/resolve/main/{BENCH}/{CATEGORY}.test.csv",
        META: f"https://hf.example/resolve/main/raw/meta_categories/{META}",
    }


def test_download_verifies_and_installs(
    server: ServerState, small_meta_hash: str, tmp_path: Path
) -> None:
    raw_dir = tmp_path / "raw"  # does not exist yet: the download creates it
    paths = download_amazon23(server.url, raw_dir, CATEGORY)
    assert [p.name for p in paths] == [f"{CATEGORY}.valid.csv", f"{CATEGORY}.test.csv", META]
    # The CSVs carry the published hashes, so they passed the real check.
    assert sha256_of(raw_dir / f"{CATEGORY}.test.csv") == KNOWN_SHA256[f"{CATEGORY}.test.csv"]
    assert sha256_of(raw_dir / f"{CATEGORY}.valid.csv") == KNOWN_SHA256[f"{CATEGORY}.valid.csv"]
    assert sha256_of(raw_dir / META) == small_meta_hash
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(p.name for p in paths)  # no .part
    assert len(read_amazon23(raw_dir, CATEGORY)) == 50_985


def test_present_files_are_not_downloaded_again(
    server: ServerState, small_meta_hash: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    raw_dir = tmp_path / "raw"
    download_amazon23(server.url, raw_dir, CATEGORY)
    assert len(server.requests) == 3
    before = {p.name: p.stat().st_mtime_ns for p in raw_dir.iterdir()}
    capsys.readouterr()
    download_amazon23(server.url, raw_dir, CATEGORY)
    assert len(server.requests) == 3
    assert {p.name: p.stat().st_mtime_ns for p in raw_dir.iterdir()} == before
    assert capsys.readouterr().out.count("already present") == 3


def test_gz_copy_counts_as_present(
    server: ServerState, small_meta_hash: str, tmp_path: Path
) -> None:
    """The shared folder ships .csv.gz files; they must not trigger a download."""
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    for split in ("valid", "test"):
        name = f"{CATEGORY}.{split}.csv.gz"
        shutil.copy(datasets_root() / "amazon23-scientific" / "raw" / name, raw_dir / name)
    paths = download_amazon23(server.url, raw_dir, CATEGORY)
    assert [p for p, _ in server.requests] == [f"/raw/meta_categories/{META}"]
    assert paths[0].name == f"{CATEGORY}.valid.csv.gz"
    assert not (raw_dir / f"{CATEGORY}.test.csv").exists()


def test_corrupted_file_is_rejected_and_removed(
    server: ServerState, tmp_path: Path, served_root: Path
) -> None:
    bad_root = tmp_path / "bad"
    shutil.copytree(served_root, bad_root)
    valid = bad_root / BENCH / f"{CATEGORY}.valid.csv"
    data = bytearray(valid.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the middle
    valid.write_bytes(bytes(data))
    server.root = bad_root
    raw_dir = tmp_path / "raw"
    with pytest.raises(DownloadError) as err:
        download_amazon23(server.url, raw_dir, CATEGORY)
    message = str(err.value)
    assert f"{CATEGORY}.valid.csv" in message
    assert KNOWN_SHA256[f"{CATEGORY}.valid.csv"] in message
    assert sha256_of(valid) in message
    assert not (raw_dir / f"{CATEGORY}.valid.csv").exists()
    assert not (raw_dir / f"{CATEGORY}.valid.csv.part").exists()


def test_unknown_category_prints_the_computed_hash(
    server: ServerState, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = server.root = tmp_path / "hf"
    for rel in (
        f"{BENCH}/Tiny.valid.csv",
        f"{BENCH}/Tiny.test.csv",
        "raw/meta_categories/meta_Tiny.jsonl",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(f"contents of {rel}\n".encode())
    raw_dir = tmp_path / "raw"
    download_amazon23(server.url, raw_dir, "Tiny")
    out = capsys.readouterr().out
    for name in ("Tiny.valid.csv", "Tiny.test.csv", "meta_Tiny.jsonl"):
        assert f"{name}: no published sha256" in out
        assert sha256_of(raw_dir / name) in out


def test_interrupted_download_resumes_with_range(
    server: ServerState, small_meta_hash: str, tmp_path: Path
) -> None:
    valid = f"{CATEGORY}.valid.csv"  # fetched first, so it is the one cut short
    raw_dir = tmp_path / "raw"
    server.cut_after = 1_000_000
    with pytest.raises(DownloadError, match="closed after 1,000,000 of") as err:
        download_amazon23(server.url, raw_dir, CATEGORY)
    assert f"{valid}.part" in str(err.value) and "run again to resume" in str(err.value)
    assert (raw_dir / f"{valid}.part").stat().st_size == 1_000_000
    assert not (raw_dir / valid).exists()

    server.requests.clear()
    server.body_bytes = 0
    download_amazon23(server.url, raw_dir, CATEGORY)
    assert server.gets(valid) == ["bytes=1000000-"]
    assert server.gets(f"{CATEGORY}.test.csv") == [None]
    sizes = {p.name: p.stat().st_size for p in raw_dir.iterdir()}
    assert server.body_bytes == sum(sizes.values()) - 1_000_000  # only the missing bytes came
    assert sorted(sizes) == sorted([valid, f"{CATEGORY}.test.csv", META])
    for name in (valid, f"{CATEGORY}.test.csv", META):
        assert sha256_of(raw_dir / name) == KNOWN_SHA256[name]


def test_server_without_range_restarts_from_zero(server: ServerState, tmp_path: Path) -> None:
    name = f"{CATEGORY}.valid.csv"
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    full = (server.root / BENCH / name).read_bytes()
    (raw_dir / f"{name}.part").write_bytes(full[:5000])
    server.support_range = False
    path = download.fetch(f"{server.url}/{BENCH}/{name}", raw_dir / name, KNOWN_SHA256[name])
    assert server.gets(name) == ["bytes=5000-"]
    assert server.body_bytes == len(full)
    assert path.read_bytes() == full


def test_complete_part_is_installed_without_refetching(server: ServerState, tmp_path: Path) -> None:
    """A run that got every byte but died before the rename: the server answers 416."""
    name = f"{CATEGORY}.valid.csv"
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    full = (server.root / BENCH / name).read_bytes()
    (raw_dir / f"{name}.part").write_bytes(full)
    path = download.fetch(f"{server.url}/{BENCH}/{name}", raw_dir / name, KNOWN_SHA256[name])
    assert server.body_bytes == 0
    assert sha256_of(path) == KNOWN_SHA256[name]


def test_part_longer_than_the_file_is_discarded(server: ServerState, tmp_path: Path) -> None:
    name = f"{CATEGORY}.valid.csv"
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    full = (server.root / BENCH / name).read_bytes()
    (raw_dir / f"{name}.part").write_bytes(full + b"junk")
    path = download.fetch(f"{server.url}/{BENCH}/{name}", raw_dir / name, KNOWN_SHA256[name])
    assert server.gets(name) == [f"bytes={len(full) + 4}-", None]
    assert path.read_bytes() == full


def test_offline_error_names_the_url(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{free_port()}"  # a port nobody listens on
    with pytest.raises(DownloadError, match="cannot connect") as err:
        download_amazon23(base, tmp_path / "raw", CATEGORY)
    assert f"{base}/{BENCH}/{CATEGORY}.valid.csv" in str(err.value)
    assert not any((tmp_path / "raw").iterdir())


def test_missing_file_error_names_the_url(server: ServerState, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        download_amazon23(server.url, tmp_path / "raw", "No_Such_Category")
    assert f"{server.url}/{BENCH}/No_Such_Category.valid.csv" in str(err.value)


def test_read_only_raw_dir_is_a_clear_error(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    raw_dir.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway, so give it what a read-only mount would say
        real_open = open

        def read_only_open(file: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
            if "w" in mode or "a" in mode:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(download, "open", read_only_open, raising=False)
    try:
        with pytest.raises(DownloadError, match="read-only") as err:
            download_amazon23(server.url, raw_dir, CATEGORY)
        assert str(raw_dir) in str(err.value)
        assert list(raw_dir.iterdir()) == []
    finally:
        raw_dir.chmod(0o755)


def test_pipeline_download_then_build(
    server: ServerState, small_meta_hash: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``data_process.py --download`` end to end: fetch, verify, split, attach item text."""
    cfg = load_config(
        "data_process",
        [
            "--dataset=scientific",
            "--download",
            f"--download_url={server.url}",
            f"--raw_dir={tmp_path / 'raw'}",
            f"--out_dir={tmp_path / 'out'}",
            "--interests.backend=none",
            "--embeddings.kind=none",
        ],
    )
    folder = build_dataset(cfg)
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["rows"] == {"train": 259_992, "valid": 50_985, "test": 50_985}
    items = load_items(folder, "scientific")
    first_target = (server.root / BENCH / f"{CATEGORY}.test.csv").read_text().splitlines()[1]
    asin = first_target.split(",")[1]
    assert items[asin]["title"] == "Lab stand"
    assert items[asin]["features"] == ["steel"]
    assert "NOT_IN_DATA" not in items
    assert "splits written" in capsys.readouterr().out
