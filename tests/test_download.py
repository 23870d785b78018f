"""The mirror downloader and the `mnist` source, against real HTTP servers on loopback."""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from genforge.core.errors import ConfigError, GenforgeError
from genforge.data.download import DownloadError, content_sha256, fetch
from genforge.data.sources.base import resolve_source
from genforge.data.sources.mnist import MNIST_SHA256, expected_digest

IMAGES, LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
T10K_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


class Handler(BaseHTTPRequestHandler):
    """Serves `server.files` under /m/, with byte ranges; can cut the first transfer of a file
    after `server.cut_after` bytes and can ignore Range headers."""

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        server = self.server
        rng = self.headers.get("Range")
        server.log.append((self.path, rng))
        name = self.path.removeprefix("/m/")
        if not self.path.startswith("/m/") or name not in server.files:
            self.send_error(404)
            return
        data = server.files[name]
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not server.ignore_range:
            start = int(m[1])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if name in server.cut_once:
            server.cut_once.discard(name)
            body = body[: server.cut_after]  # then the connection closes short of Content-Length
        self.wfile.write(body)


@pytest.fixture
def server(mnist_test_dir: Path) -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files = {name: (mnist_test_dir / name).read_bytes() for name in (IMAGES, LABELS)}
    httpd.log, httpd.cut_once, httpd.cut_after, httpd.ignore_range = [], set(), 0, False
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def base(httpd: ThreadingHTTPServer, prefix: str = "m") -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/{prefix}/"


def dead_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/m/"


def test_known_digests_match_the_shared_files(mnist_test_dir: Path):
    for name in (IMAGES, LABELS):
        assert content_sha256(mnist_test_dir / name) == MNIST_SHA256[name]


def test_mnist_test_split_past_a_dead_and_a_404_mirror(server, tmp_path: Path):
    mirrors = [dead_url(), base(server, "missing"), base(server)]
    seen = []
    source = resolve_source(
        "mnist:test",
        mirrors=mirrors,
        cache_dir=str(tmp_path),
        backoff=0,
        timeout=5,
        progress=lambda *a: seen.append(a),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [IMAGES, LABELS]  # nothing else: no .part
    items = list(source)
    assert len(items) == 10_000 and {i.split for i in items} == {"test"}
    assert [sum(i.label == str(d) for i in items) for d in range(10)] == T10K_COUNTS
    assert ("/missing/" + IMAGES, None) in server.log
    assert seen[-1] == (LABELS, len(server.files[LABELS]), len(server.files[LABELS]))
    described = json.loads(json.dumps(source.describe()))
    assert described["sha256"] == {IMAGES: MNIST_SHA256[IMAGES], LABELS: MNIST_SHA256[LABELS]}
    assert described["source"] == "mnist" and described["mirrors"] == mirrors and described["count"] == 10_000
    # a second open finds the verified files in the cache and asks no server
    requests = len(server.log)
    assert (
        len(
            resolve_source("mnist:test", mirrors=mirrors, cache_dir=str(tmp_path), limit=5).describe()[
                "files"
            ]
        )
        == 1
    )
    assert len(server.log) == requests


def test_cache_dir_from_environment(server, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    resolve_source("mnist", splits=["test"], mirrors=[base(server)], backoff=0)
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == [IMAGES, LABELS]


def test_cut_connection_resumes_with_range(server, tmp_path: Path):
    data = server.files[IMAGES]
    server.cut_once, server.cut_after = {IMAGES}, 600_000
    target = tmp_path / IMAGES
    with pytest.raises(DownloadError, match=f"connection closed after 600000 of {len(data)} bytes"):
        fetch([base(server) + IMAGES], target, sha256=MNIST_SHA256[IMAGES], retries=1, timeout=5)
    part = tmp_path / (IMAGES + ".part")
    assert not target.exists() and part.read_bytes() == data[:600_000]
    assert fetch([base(server) + IMAGES], target, sha256=MNIST_SHA256[IMAGES], retries=1, timeout=5) == target
    assert server.log[-1] == ("/m/" + IMAGES, "bytes=600000-")
    assert target.read_bytes() == data and not part.exists()


def test_cut_connection_resumes_within_one_call(server, tmp_path: Path):
    server.cut_once, server.cut_after = {LABELS}, 1000
    target = fetch(
        [base(server) + LABELS], tmp_path / LABELS, sha256=MNIST_SHA256[LABELS], backoff=0, timeout=5
    )
    assert [r for _, r in server.log] == [None, "bytes=1000-"]
    assert target.read_bytes() == server.files[LABELS]


def test_server_ignoring_range_restarts_the_file(server, tmp_path: Path):
    server.ignore_range = True
    (tmp_path / (LABELS + ".part")).write_bytes(b"\x00" * 77)  # a stale partial file
    target = fetch([base(server) + LABELS], tmp_path / LABELS, sha256=MNIST_SHA256[LABELS], timeout=5)
    assert server.log == [("/m/" + LABELS, "bytes=77-")]
    assert target.read_bytes() == server.files[LABELS]


def test_corrupt_content_is_rejected_and_nothing_is_cached(server, tmp_path: Path):
    raw = bytearray(gzip.decompress(server.files[LABELS]))
    raw[100] ^= 1  # one changed label, re-gzipped: a valid gzip file with the wrong content
    server.files[LABELS] = gzip.compress(bytes(raw))
    with pytest.raises(
        DownloadError, match=f"content sha256 is [0-9a-f]{{64}}, expected {MNIST_SHA256[LABELS]}"
    ):
        fetch(
            [base(server) + LABELS],
            tmp_path / LABELS,
            sha256=MNIST_SHA256[LABELS],
            retries=2,
            backoff=0,
            timeout=5,
        )
    assert list(tmp_path.iterdir()) == []
    server.files[IMAGES] = b"\x1f\x8b garbage"  # not even gzip
    with pytest.raises(GenforgeError, match="content is not readable") as info:
        resolve_source(
            "mnist:test", mirrors=[base(server)], cache_dir=str(tmp_path / "c"), retries=1, timeout=5
        )
    assert isinstance(info.value, DownloadError)
    assert list((tmp_path / "c").iterdir()) == []


def test_cached_file_that_no_longer_verifies_is_fetched_again(server, tmp_path: Path):
    (tmp_path / LABELS).write_bytes(gzip.compress(b"stale"))
    fetch([base(server) + LABELS], tmp_path / LABELS, sha256=MNIST_SHA256[LABELS], timeout=5)
    assert (tmp_path / LABELS).read_bytes() == server.files[LABELS]
    assert len(server.log) == 1


def test_all_mirrors_failing_lists_each_attempt(tmp_path: Path):
    dead = dead_url() + LABELS
    with pytest.raises(DownloadError) as info:
        fetch([dead, "not a url"], tmp_path / LABELS, sha256=None, retries=2, backoff=0, timeout=5)
    message = str(info.value)
    lines = message.splitlines()[1:]
    assert [line.split(": ", 1)[0].strip() for line in lines] == [dead, "not a url"] * 2
    assert "cannot connect" in lines[0] and "unknown url type" in lines[1]
    with pytest.raises(ConfigError, match="mirror list is empty"):
        fetch([], tmp_path / LABELS, sha256=None)


def test_digest_table_and_explicit_unverified_choice(server, tmp_path: Path):
    assert expected_digest(IMAGES, {}) == MNIST_SHA256[IMAGES]
    assert expected_digest("other.gz", {"other.gz": None}) is None
    with pytest.raises(ConfigError, match=r"no known sha256 for other.gz; pass digests=\{'other.gz': None\}"):
        expected_digest("other.gz", {})
    source = resolve_source(
        "mnist:test", mirrors=[base(server)], cache_dir=str(tmp_path), digests={LABELS: None}, timeout=5
    )
    assert source.describe()["sha256"][LABELS] is None
    with pytest.raises(ConfigError, match="splits must be a non-empty subset"):
        resolve_source("mnist", splits=["extra"], cache_dir=str(tmp_path))
