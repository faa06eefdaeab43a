"""Weights cache: downloads against a real HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from stemflow.errors import ChecksumError, ModelNotAvailableError, StemflowError
from stemflow.hub import cache as cache_cache
from stemflow.files import sha256_file
from stemflow.hub.cache import (
    cached_sha256,
    default_cache_dir,
    fetch_weights,
    is_cached,
    weights_path,
    weights_sha256,
)
from stemflow.hub.model_list import list_model_rows
from stemflow.hub.pins import load_pins
from stemflow.hub.registry import ModelEntry, Registry, ReportedSdr

PAYLOAD_BYTES = 3 * (1 << 20) + 12345  # several 1 MiB reads plus a partial one


@dataclass
class Route:
    """What the server answers for one path."""

    body: bytes = b""
    status: int = 200
    truncate_at: int | None = None  # send the full Content-Length, then only this many bytes
    location: str | None = None  # answer with a 302 redirect to this path
    send_length: bool = True  # False: no Content-Length, the body ends when the connection closes
    block_delay_s: float = 0.0  # pause after each 64 KiB block (a slow server)


@dataclass
class FileServer:
    """A threaded HTTP server on 127.0.0.1 serving routes from memory and counting hits."""

    base_url: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


def _handler(server_state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            server_state.hits[self.path] += 1
            route = server_state.routes.get(self.path)
            if route is not None and route.location is not None:
                self.send_response(302)
                self.send_header("Location", route.location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if route is None or route.status != 200:
                self.send_error(route.status if route else 404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if route.send_length:
                self.send_header("Content-Length", str(len(route.body)))
            else:
                self.close_connection = True
            self.end_headers()
            body = route.body if route.truncate_at is None else route.body[: route.truncate_at]
            try:
                for start in range(0, len(body), 1 << 16):
                    self.wfile.write(body[start : start + (1 << 16)])
                    self.wfile.flush()
                    if route.block_delay_s:
                        time.sleep(route.block_delay_s)
            except (BrokenPipeError, ConnectionResetError):
                return  # the client went away
            if route.truncate_at is not None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


@pytest.fixture()
def server() -> Iterator[FileServer]:
    state = FileServer(base_url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture()
def dead_url() -> str:
    """A URL on a port where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights.ckpt"


def payload(seed: int, size: int = PAYLOAD_BYTES) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_entry(urls: list[str], *, sha256: str | None = None, name: str = "test-model", **kw: object) -> ModelEntry:
    return ModelEntry(
        name=name,
        architecture="bs_roformer",
        stems=("vocals", "instrumental"),
        config="none.yaml",
        config_path=Path("/nonexistent/none.yaml"),
        source="url",
        license="unknown",
        reported_sdr=None,
        urls=tuple(urls),
        filename="weights.ckpt",
        sha256=sha256,
        pin_on_first_download=sha256 is None,
        **kw,  # type: ignore[arg-type]
    )


def leftovers(folder: Path) -> list[str]:
    """Temporary download files left in a weights folder (``.tmp``; ``.part`` from older versions)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.glob(".weights.ckpt.*") if p.name.endswith((".tmp", ".part")))


# --- downloads ---------------------------------------------------------------------------


def test_good_download_with_published_sha256(server: FileServer, tmp_path: Path) -> None:
    data = payload(1)
    server.routes["/w.ckpt"] = Route(data)
    entry = make_entry([server.url("/w.ckpt")], sha256=sha(data))
    path = fetch_weights(entry, tmp_path)
    assert path == tmp_path / "weights" / "test-model" / "weights.ckpt"
    assert path.read_bytes() == data
    assert sha256_file(path) == sha(data)
    sidecar = json.loads(path.with_name("weights.ckpt.sha256").read_text())
    assert sidecar == {"sha256": sha(data), "size": len(data), "mtime_ns": path.stat().st_mtime_ns}
    assert leftovers(path.parent) == []
    assert load_pins(tmp_path) == {}  # published hash: nothing to pin
    assert server.hits["/w.ckpt"] == 1


def test_progress_callback_reports_bytes_done_and_total(server: FileServer, tmp_path: Path) -> None:
    data = payload(2)
    server.routes["/w.ckpt"] = Route(data)
    calls: list[tuple[int, int | None]] = []
    fetch_weights(make_entry([server.url("/w.ckpt")], sha256=sha(data)), tmp_path, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, len(data))
    assert calls[-1] == (len(data), len(data))
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(calls) >= 5  # 4 blocks of <= 1 MiB plus the start
    assert {t for _, t in calls} == {len(data)}


def test_checksum_mismatch_is_fatal_and_leaves_nothing(server: FileServer, tmp_path: Path) -> None:
    data = payload(3)
    server.routes["/w.ckpt"] = Route(data)
    server.routes["/mirror.ckpt"] = Route(data)
    wrong = sha(b"something else")
    entry = make_entry([server.url("/w.ckpt"), server.url("/mirror.ckpt")], sha256=wrong)
    with pytest.raises(ChecksumError) as info:
        fetch_weights(entry, tmp_path)
    message = str(info.value)
    assert wrong in message and sha(data) in message and server.url("/w.ckpt") in message
    final = weights_path(entry, tmp_path)
    assert not final.exists()
    assert leftovers(final.parent) == []
    assert server.hits["/mirror.ckpt"] == 0  # a mismatch is not a network error: no mirror hopping


def test_size_mismatch_is_a_checksum_error(server: FileServer, tmp_path: Path) -> None:
    data = payload(4, 1000)
    server.routes["/w.ckpt"] = Route(data)
    entry = make_entry([server.url("/w.ckpt")], sha256=sha(data), size_bytes=999)
    with pytest.raises(ChecksumError, match="1000 bytes"):
        fetch_weights(entry, tmp_path)
    assert not weights_path(entry, tmp_path).exists()


def test_mirrors_are_tried_in_order_on_network_errors(server: FileServer, tmp_path: Path, dead_url: str) -> None:
    data = payload(5)
    server.routes["/missing.ckpt"] = Route(status=404)
    server.routes["/good.ckpt"] = Route(data)
    entry = make_entry([dead_url, server.url("/missing.ckpt"), server.url("/good.ckpt")], sha256=sha(data))
    path = fetch_weights(entry, tmp_path)
    assert path.read_bytes() == data
    assert server.hits["/missing.ckpt"] == 1 and server.hits["/good.ckpt"] == 1


def test_interrupted_download_leaves_no_final_file(server: FileServer, tmp_path: Path) -> None:
    data = payload(6)
    server.routes["/cut.ckpt"] = Route(data, truncate_at=len(data) // 2)
    entry = make_entry([server.url("/cut.ckpt")], sha256=sha(data))
    with pytest.raises(ModelNotAvailableError) as info:
        fetch_weights(entry, tmp_path)
    assert server.url("/cut.ckpt") in str(info.value)
    final = weights_path(entry, tmp_path)
    assert not final.exists()
    assert leftovers(final.parent) == []


def test_interrupted_download_falls_back_to_the_next_mirror(server: FileServer, tmp_path: Path) -> None:
    data = payload(7)
    server.routes["/cut.ckpt"] = Route(data, truncate_at=100_000)
    server.routes["/good.ckpt"] = Route(data)
    entry = make_entry([server.url("/cut.ckpt"), server.url("/good.ckpt")])  # unpinned: pins the good one
    path = fetch_weights(entry, tmp_path)
    assert path.read_bytes() == data
    assert load_pins(tmp_path)["test-model"]["sha256"] == sha(data)
    assert load_pins(tmp_path)["test-model"]["url"] == server.url("/good.ckpt")


def test_exception_mid_download_leaves_no_final_file(server: FileServer, tmp_path: Path) -> None:
    data = payload(8)
    server.routes["/w.ckpt"] = Route(data)
    entry = make_entry([server.url("/w.ckpt")], sha256=sha(data))

    class Interrupted(Exception):
        pass

    def progress(done: int, total: int | None) -> None:
        if done > (1 << 20):
            raise Interrupted

    with pytest.raises(Interrupted):
        fetch_weights(entry, tmp_path, progress=progress)
    final = weights_path(entry, tmp_path)
    assert not final.exists()
    assert leftovers(final.parent) == []
    # a later attempt starts from scratch and succeeds
    assert fetch_weights(entry, tmp_path).read_bytes() == data


def test_killed_download_leaves_no_final_file(server: FileServer, tmp_path: Path) -> None:
    """A real SIGKILL mid-body: no final file; the next fetch cleans up and completes."""
    data = payload(22)
    server.routes["/slow.ckpt"] = Route(data, block_delay_s=0.05)  # ~2.5 s for the whole body
    entry = make_entry([server.url("/slow.ckpt")], sha256=sha(data))
    final = weights_path(entry, tmp_path)
    code = (
        "import sys; from pathlib import Path\n"
        "from stemflow.hub.cache import fetch_weights\n"
        "from stemflow.hub.registry import ModelEntry\n"
        f"entry = ModelEntry(name='test-model', architecture='bs_roformer', stems=('vocals',), config='x.yaml',"
        f" config_path=Path('x.yaml'), source='url', license='unknown', reported_sdr=None,"
        f" urls=({server.url('/slow.ckpt')!r},), filename='weights.ckpt', sha256={sha(data)!r})\n"
        f"fetch_weights(entry, Path({str(tmp_path)!r}))\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            parts = list(final.parent.glob(".weights.ckpt.*.tmp")) if final.parent.exists() else []
            if parts and parts[0].stat().st_size > (1 << 20):
                break
            time.sleep(0.02)
        else:
            pytest.fail("the child never got 1 MiB into the download")
        child.kill()
    finally:
        child.wait(timeout=30)
    assert child.returncode != 0
    assert not final.exists()
    assert leftovers(final.parent) != []  # SIGKILL runs no cleanup: the temp file is left...
    server.routes["/slow.ckpt"] = Route(data)
    assert fetch_weights(entry, tmp_path).read_bytes() == data
    assert leftovers(final.parent) == []  # ...and the next download removes it


def test_a_part_file_left_by_an_older_version_is_removed(server: FileServer, tmp_path: Path) -> None:
    """Interrupted downloads of stemflow before the regrouping left ``.<name>.<random>.part`` files."""
    data = payload(23, 5000)
    server.routes["/w.ckpt"] = Route(data)
    entry = make_entry([server.url("/w.ckpt")], sha256=sha(data))
    final = weights_path(entry, tmp_path)
    final.parent.mkdir(parents=True)
    (final.parent / ".weights.ckpt.k2j4x8aa.part").write_bytes(data[:100])
    assert fetch_weights(entry, tmp_path).read_bytes() == data
    assert leftovers(final.parent) == []


def test_offline_error_says_what_to_place_where(server: FileServer, tmp_path: Path) -> None:
    data = payload(9, 2000)
    server.routes["/w.ckpt"] = Route(data)
    entry = make_entry([server.url("/w.ckpt"), "https://mirror.example/w.ckpt"], sha256=sha(data))
    with pytest.raises(ModelNotAvailableError) as info:
        fetch_weights(entry, tmp_path, offline=True)
    message = str(info.value)
    final = tmp_path / "weights" / "test-model" / "weights.ckpt"
    assert str(final) in message
    assert server.url("/w.ckpt") in message and "https://mirror.example/w.ckpt" in message
    assert sha(data) in message
    assert server.hits["/w.ckpt"] == 0
    # following the instructions works offline
    final.parent.mkdir(parents=True)
    final.write_bytes(data)
    assert fetch_weights(entry, tmp_path, offline=True) == final


def test_no_reachable_source_is_model_not_available(tmp_path: Path, dead_url: str) -> None:
    entry = make_entry([dead_url])
    with pytest.raises(ModelNotAvailableError) as info:
        fetch_weights(entry, tmp_path, timeout_s=5)
    message = str(info.value)
    assert dead_url in message and str(weights_path(entry, tmp_path)) in message
    assert "pins.json" in message  # unpinned: explains that the first placed file gets pinned
    assert isinstance(info.value, StemflowError)


def test_cached_file_is_never_downloaded_again(server: FileServer, tmp_path: Path) -> None:
    data = payload(10)
    server.routes["/w.ckpt"] = Route(data)
    entry = make_entry([server.url("/w.ckpt")], sha256=sha(data))
    first = fetch_weights(entry, tmp_path)
    second = fetch_weights(entry, tmp_path)
    third = fetch_weights(entry, tmp_path, offline=True)
    assert first == second == third
    assert server.hits["/w.ckpt"] == 1


def test_sidecar_avoids_rehashing_until_the_file_changes(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(11)
    server.routes["/w.ckpt"] = Route(data)
    entry = make_entry([server.url("/w.ckpt")], sha256=sha(data))
    path = fetch_weights(entry, tmp_path)
    hashed: list[Path] = []
    real = cache_cache.sha256_file
    monkeypatch.setattr(cache_cache, "sha256_file", lambda p: hashed.append(Path(p)) or real(p))
    fetch_weights(entry, tmp_path)
    assert hashed == []  # sidecar matched size + mtime
    # same size, new content and mtime: re-verified, found corrupted, user told to delete it
    corrupted = bytearray(data)
    corrupted[12345] ^= 0xFF
    path.write_bytes(bytes(corrupted))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(ChecksumError) as info:
        fetch_weights(entry, tmp_path)
    assert hashed == [path]
    assert "delete it" in str(info.value) and str(path) in str(info.value)
    assert sha(bytes(corrupted)) in str(info.value) and sha(data) in str(info.value)
    assert server.hits["/w.ckpt"] == 1  # never silently re-downloaded
    assert path.read_bytes() == bytes(corrupted)  # and never silently deleted


def test_pin_on_first_download_is_recorded_then_enforced(server: FileServer, tmp_path: Path) -> None:
    first, changed = payload(12), payload(13)
    server.routes["/w.ckpt"] = Route(first)
    entry = make_entry([server.url("/w.ckpt")])
    path = fetch_weights(entry, tmp_path)
    pins = json.loads((tmp_path / "pins.json").read_text())
    assert pins["version"] == 1
    assert pins["pins"]["test-model"]["sha256"] == sha(first)
    assert pins["pins"]["test-model"]["filename"] == "weights.ckpt"

    # the source silently replaces the file: a fresh download must match the pin
    path.unlink()
    server.routes["/w.ckpt"] = Route(changed)
    with pytest.raises(ChecksumError) as info:
        fetch_weights(entry, tmp_path)
    assert sha(first) in str(info.value) and sha(changed) in str(info.value)
    assert not path.exists()
    assert load_pins(tmp_path)["test-model"]["sha256"] == sha(first)  # the pin is not overwritten

    # a cached file that differs from the pin is reported too
    path.write_bytes(changed)
    with pytest.raises(ChecksumError, match="delete it"):
        fetch_weights(entry, tmp_path)


def test_a_placed_file_for_an_unpinned_entry_gets_pinned(tmp_path: Path) -> None:
    data = payload(14, 5000)
    entry = make_entry(["https://unreachable.example/w.ckpt"])
    final = weights_path(entry, tmp_path)
    final.parent.mkdir(parents=True)
    final.write_bytes(data)
    assert fetch_weights(entry, tmp_path, offline=True) == final
    assert load_pins(tmp_path)["test-model"]["sha256"] == sha(data)
    assert load_pins(tmp_path)["test-model"]["url"] is None


def test_two_models_pin_independently(server: FileServer, tmp_path: Path) -> None:
    a, b = payload(15, 4000), payload(16, 4000)
    server.routes["/a.ckpt"], server.routes["/b.ckpt"] = Route(a), Route(b)
    fetch_weights(make_entry([server.url("/a.ckpt")], name="model-a"), tmp_path)
    fetch_weights(make_entry([server.url("/b.ckpt")], name="model-b"), tmp_path)
    pins = load_pins(tmp_path)
    assert (pins["model-a"]["sha256"], pins["model-b"]["sha256"]) == (sha(a), sha(b))


def test_package_entries_have_no_weights_file(tmp_path: Path) -> None:
    entry = replace(make_entry([]), source="package", package="pytest", urls=(), filename=None,
                    pin_on_first_download=False)
    with pytest.raises(StemflowError, match="no weights file"):
        fetch_weights(entry, tmp_path)
    assert is_cached(entry, tmp_path)  # pytest is installed
    assert not is_cached(replace(entry, package="stemflow-no-such-package"), tmp_path)


def test_redirects_are_followed(server: FileServer, tmp_path: Path) -> None:
    data = payload(18, 5000)  # GitHub release and Hugging Face URLs answer with redirects
    server.routes["/release/w.ckpt"] = Route(location="/cdn/w.ckpt")
    server.routes["/cdn/w.ckpt"] = Route(data)
    path = fetch_weights(make_entry([server.url("/release/w.ckpt")], sha256=sha(data)), tmp_path)
    assert path.read_bytes() == data
    assert server.hits["/release/w.ckpt"] == 1 and server.hits["/cdn/w.ckpt"] == 1


def test_unknown_length_is_reported_as_none_and_still_verified(server: FileServer, tmp_path: Path) -> None:
    data = payload(19)
    server.routes["/w.ckpt"] = Route(data, send_length=False)
    calls: list[tuple[int, int | None]] = []
    path = fetch_weights(
        make_entry([server.url("/w.ckpt")], sha256=sha(data)), tmp_path, progress=lambda d, t: calls.append((d, t))
    )
    assert path.read_bytes() == data
    assert calls[0] == (0, None) and calls[-1] == (len(data), None)


def test_concurrent_fetches_download_once(server: FileServer, tmp_path: Path) -> None:
    data = payload(20)
    server.routes["/w.ckpt"] = Route(data)
    entry = make_entry([server.url("/w.ckpt")])  # unpinned: both must agree on one pin
    results: list[Path] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            results.append(fetch_weights(entry, tmp_path))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) == 4 and len(set(results)) == 1
    assert server.hits["/w.ckpt"] == 1
    assert results[0].read_bytes() == data
    assert load_pins(tmp_path)["test-model"]["sha256"] == sha(data)


def test_weights_sha256_is_the_verified_hash(server: FileServer, tmp_path: Path) -> None:
    data = payload(21, 10_000)
    server.routes["/w.ckpt"] = Route(data)
    entry = make_entry([server.url("/w.ckpt")], sha256=sha(data))
    with pytest.raises(ModelNotAvailableError):
        weights_sha256(entry, tmp_path)  # offline by default: never downloads behind the caller's back
    assert weights_sha256(entry, tmp_path, offline=False) == sha(data)
    assert cached_sha256(weights_path(entry, tmp_path)) == sha(data)
    assert server.hits["/w.ckpt"] == 1


# --- cache folder and the `models list` backend -------------------------------------------


def test_default_cache_dir_reads_only_the_mapping_it_is_given() -> None:
    assert default_cache_dir({"STEMFLOW_CACHE": "/data/sf", "HOME": "/home/u"}) == Path("/data/sf")
    assert default_cache_dir({"HOME": "/home/u"}) == Path("/home/u/.cache/stemflow")
    assert default_cache_dir({"STEMFLOW_CACHE": "  ", "HOME": "/home/u"}) == Path("/home/u/.cache/stemflow")
    assert default_cache_dir({"STEMFLOW_CACHE": "~/sf", "HOME": "/home/u"}) == Path("~/sf").expanduser()


def test_list_model_rows_reports_cached_state(server: FileServer, tmp_path: Path) -> None:
    data = payload(17, 3000)
    server.routes["/w.ckpt"] = Route(data)
    url_entry = replace(
        make_entry([server.url("/w.ckpt")], sha256=sha(data), name="tiny-url"),
        reported_sdr=ReportedSdr(10.87, "SDR vocals", "Multisong (MVSep)"),
    )
    package_entry = replace(
        make_entry([], name="tiny-package"), source="package", package="pytest", urls=(), filename=None,
        pin_on_first_download=False, license="MIT",
    )
    registry = Registry(
        entries={e.name: e for e in (url_entry, package_entry)}, source=tmp_path / "r.yaml", configs_dir=tmp_path
    )
    rows = {row.name: row for row in list_model_rows(tmp_path, registry)}
    assert list(rows) == ["tiny-url", "tiny-package"]
    assert rows["tiny-url"].cached is False
    assert rows["tiny-url"].reported_sdr == "10.87 dB (SDR vocals, Multisong (MVSep))"
    assert rows["tiny-url"].location == str(tmp_path / "weights" / "tiny-url" / "weights.ckpt")
    assert rows["tiny-package"].cached is True and rows["tiny-package"].location.startswith("package pytest ")
    assert rows["tiny-package"].reported_sdr == "not reported" and rows["tiny-package"].license == "MIT"
    fetch_weights(url_entry, tmp_path)
    assert next(r for r in list_model_rows(tmp_path, registry) if r.name == "tiny-url").cached is True


def test_list_model_rows_on_the_real_registry(tmp_path: Path) -> None:
    rows = list_model_rows(tmp_path)
    names = [row.name for row in rows]
    assert "spleeter-2stems" in names and len(names) >= 6
    for row in rows:
        if row.name != "spleeter-2stems":
            assert row.cached is False and row.location.startswith(str(tmp_path))


def test_a_corrupted_pins_file_is_reported_not_ignored(tmp_path: Path) -> None:
    (tmp_path / "pins.json").write_text("{not json")
    entry = make_entry(["https://unreachable.example/w.ckpt"])
    with pytest.raises(StemflowError, match="pins"):
        fetch_weights(entry, tmp_path, offline=True)
    (tmp_path / "pins.json").write_text('{"something": "else"}')
    with pytest.raises(StemflowError, match="not a stemflow pins file"):
        load_pins(tmp_path)
