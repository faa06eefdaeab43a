"""A fault-injecting HTTP proxy for tests: sits between s3fs and a moto S3 server.

The proxy listens on ``127.0.0.1`` (a free port), forwards every request to the
upstream endpoint and returns its answer, except where a programmable
:class:`Fault` rule matches. Point s3fs at ``proxy.url`` instead of moto's URL.

Fault kinds (what the client sees):

``slowdown``
    HTTP 503 with S3's ``SlowDown`` XML body; the request never reaches moto.
``error500``
    HTTP 500 ``InternalError``; not forwarded.
``reset``
    The TCP connection is reset (RST, no response); not forwarded.
``reset_after``
    Forwarded (moto applies it: the object *is* written), then the connection is
    reset before the response: the classic "did my PUT happen?" case.
``stall``
    Nothing is sent for ``stall_s`` seconds (past the client's read timeout),
    then the connection is closed; not forwarded.
``truncate``
    Forwarded; the response headers promise the full body but only half of it is
    sent before a reset (a connection reset mid-body on a read).
``trickle``
    Forwarded; the body is sent ``trickle_bytes`` at a time, one piece every
    ``trickle_interval_s`` seconds: each read gets bytes well within any read
    timeout, yet the whole body takes for ever (a store that trickles).

A rule matches on method, a regular expression searched in the request path
(``/bucket/key``) and a window of its own match count (``first``-th to
``first + times - 1``-th matching request, 1-based), or with ``probability``
(drawn from the proxy's seeded generator) instead of the window. Every request is
logged (:attr:`FaultProxy.log`) with the fault applied, if any.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

KINDS = ("slowdown", "error500", "reset", "reset_after", "stall", "truncate", "trickle")

_SLOWDOWN_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>fault-proxy</RequestId></Error>"
)
_INTERNAL_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message>"
    b"<RequestId>fault-proxy</RequestId></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Fault:
    """One fault rule (see the module docstring for ``kind``).

    Attributes:
        kind: one of :data:`KINDS`.
        method: HTTP method to match (``PUT``, ``GET``, ``HEAD``…), or ``None`` for any.
        path_pattern: regular expression searched in the request path (``/bucket/key?query``).
        first: 1-based index of the first matching request that fails.
        times: how many consecutive matching requests fail from ``first`` on.
        probability: if set, each matching request fails with this probability instead.
        stall_s: seconds a ``stall`` waits before closing the connection.
        trickle_bytes, trickle_interval_s: how a ``trickle`` sends its body.
    """

    kind: str
    method: str | None = None
    path_pattern: str = ""
    first: int = 1
    times: int = 1
    probability: float | None = None
    stall_s: float = 5.0
    trickle_bytes: int = 64
    trickle_interval_s: float = 0.5
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; valid: {KINDS}")
        self._regex = re.compile(self.path_pattern)


@dataclass(frozen=True)
class LoggedRequest:
    """One request the proxy saw, and the fault it applied (``None`` if forwarded normally)."""

    method: str
    path: str
    fault: str | None
    status: int | None


class FaultProxy:
    """A threaded HTTP proxy with a fault schedule; use as a context manager.

    >>> with FaultProxy("http://127.0.0.1:5000") as proxy:   # doctest: +SKIP
    ...     proxy.add(Fault("slowdown", method="PUT", path_pattern=r"_COMMITTED"))
    ...     storage_options = s3_storage_options(proxy.url)
    """

    def __init__(self, upstream_url: str, *, seed: int = 0) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults: list[Fault] = []
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the endpoint to give the S3 client."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, *faults: Fault) -> None:
        """Append fault rules (checked in order; the first that fires wins)."""
        with self._lock:
            self.faults.extend(faults)

    def clear(self) -> None:
        """Remove every fault rule (the log is kept)."""
        with self._lock:
            self.faults.clear()

    def injected(self, kind: str | None = None) -> list[LoggedRequest]:
        """Logged requests that got a fault (of ``kind``, if given)."""
        with self._lock:
            return [r for r in self.log if r.fault is not None and (kind is None or r.fault == kind)]

    def choose(self, method: str, path: str) -> Fault | None:
        """The fault to apply to this request, if any (counts matches; thread-safe)."""
        with self._lock:
            for fault in self.faults:
                if fault.method is not None and fault.method != method:
                    continue
                if not fault._regex.search(path):
                    continue
                fault.seen += 1
                if fault.probability is not None:
                    fire = self._rng.random() < fault.probability
                else:
                    fire = fault.first <= fault.seen < fault.first + fault.times
                if fire:
                    fault.fired += 1
                    return fault
            return None

    def record(self, method: str, path: str, fault: str | None, status: int | None) -> None:
        """Append one entry to :attr:`log`."""
        with self._lock:
            self.log.append(LoggedRequest(method, path, fault, status))


def _handler_class(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        owner = proxy

    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        return

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0) so the client sees a connection reset."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            drop = _HOP_BY_HOP if self.command == "HEAD" else _HOP_BY_HOP | {"content-length"}
            return response.status, [(k, v) for k, v in response.getheaders() if k.lower() not in drop], data
        finally:
            conn.close()

    def _send(self, status: int, headers: list[tuple[str, str]], data: bytes, *, cut: bool = False,
              trickle: Fault | None = None) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        if self.command != "HEAD":  # a HEAD answer keeps the upstream's Content-Length
            self.send_header("Content-Length", str(len(data)))
        elif not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", "0")
        self.end_headers()
        if self.command == "HEAD":
            return
        if cut:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self._reset()
            return
        if trickle is not None:
            try:
                for start in range(0, len(data), trickle.trickle_bytes):
                    self.wfile.write(data[start : start + trickle.trickle_bytes])
                    self.wfile.flush()
                    time.sleep(trickle.trickle_interval_s)
            except OSError:  # the client gave up
                self.close_connection = True
            return
        self.wfile.write(data)

    def _handle(self) -> None:
        body = self._read_body()
        fault = self.owner.choose(self.command, self.path)
        kind = fault.kind if fault is not None else None
        if kind == "slowdown":
            self.owner.record(self.command, self.path, kind, 503)
            self._send(503, [("Content-Type", "application/xml")], _SLOWDOWN_XML)
            return
        if kind == "error500":
            self.owner.record(self.command, self.path, kind, 500)
            self._send(500, [("Content-Type", "application/xml")], _INTERNAL_XML)
            return
        if kind == "reset":
            self.owner.record(self.command, self.path, kind, None)
            self._reset()
            return
        if kind == "stall":
            self.owner.record(self.command, self.path, kind, None)
            time.sleep(fault.stall_s if fault is not None else 5.0)
            self._reset()
            return
        status, headers, data = self._forward(body)
        if kind == "reset_after":
            self.owner.record(self.command, self.path, kind, None)
            self._reset()
            return
        self.owner.record(self.command, self.path, kind, status)
        self._send(status, headers, data, cut=kind == "truncate" and len(data) > 1,
                   trickle=fault if kind == "trickle" else None)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815
