"""Weight downloads are capped even when nobody says how large the file is."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stemflow.errors import ChecksumError
from stemflow.hub.download import download_first

BODY = b"w" * (3 << 20)  # 3 MiB


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # a body without Content-Length ends when the connection closes
    sent: list[int] = []

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self.send_response(200)
        if self.path == "/announced.ckpt":
            self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        written = 0
        try:
            for start in range(0, len(BODY), 64 << 10):
                self.wfile.write(BODY[start:start + (64 << 10)])
                written += 64 << 10
        except OSError:
            pass
        _Handler.sent.append(written)


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_body_without_a_length_is_cut_off_at_the_cap(server: str, tmp_path: Path) -> None:
    final = tmp_path / "w.ckpt"
    with pytest.raises(ChecksumError, match="more than the 1048576 allowed"):
        download_first([f"{server}/unannounced.ckpt"], final, name="m", expected_sha256=None, max_bytes=1 << 20)
    assert not final.exists() and list(tmp_path.iterdir()) == []  # nothing kept, no temporary file


def test_an_announced_length_over_the_cap_is_refused_before_reading(server: str, tmp_path: Path) -> None:
    final = tmp_path / "w.ckpt"
    with pytest.raises(ChecksumError, match=f"sends {len(BODY)} bytes"):
        download_first([f"{server}/announced.ckpt"], final, name="m", expected_sha256=None, max_bytes=1 << 20)
    assert list(tmp_path.iterdir()) == []
    # the registry's size is the cap when it is known, whatever max_bytes says
    with pytest.raises(ChecksumError, match="more than the 1000 allowed"):
        download_first([f"{server}/unannounced.ckpt"], final, name="m", expected_sha256=None, size_bytes=1000)
    url, _ = download_first([f"{server}/unannounced.ckpt"], final, name="m", expected_sha256=None,
                            max_bytes=len(BODY))
    assert final.read_bytes() == BODY and url.endswith("/unannounced.ckpt")
