"""Reusable S3 fixtures: a real moto S3 server on 127.0.0.1 that s3fs talks HTTP to.

Import the fixtures into a test module (``from s3_fixtures import moto_server,
s3_options, s3_bucket``) and mark the tests ``@pytest.mark.s3``.

* ``moto_server`` (session): the server's endpoint URL, e.g. ``http://127.0.0.1:41234``.
* ``s3_options``: the fsspec ``storage_options`` that reach it (pass them to every
  stemflow storage function together with ``s3://`` URLs).
* ``s3_bucket``: a fresh, empty bucket per test; yields its URL ``s3://<name>``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest


def s3_storage_options(endpoint_url: str) -> dict[str, Any]:
    """fsspec/s3fs options for a moto (or any S3-compatible) endpoint with test credentials."""
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint_url},
        "config_kwargs": {"request_checksum_calculation": "when_required"},
    }


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Start ``ThreadedMotoServer`` on a free port for the whole session; yield its URL."""
    moto_server_module = pytest.importorskip("moto.server")
    patcher = pytest.MonkeyPatch()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        patcher.setenv(name, value)
    server = moto_server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        patcher.undo()


@pytest.fixture
def s3_options(moto_server: str) -> dict[str, Any]:
    """Storage options reaching the session's moto server."""
    return s3_storage_options(moto_server)


@pytest.fixture
def s3_bucket(s3_options: dict[str, Any]) -> Iterator[str]:
    """A fresh empty bucket; yields ``s3://<bucket>``."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    name = f"test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    yield f"s3://{name}"
    fs.rm(name, recursive=True)


@pytest.fixture(params=["local", "memory", pytest.param("s3", marks=pytest.mark.s3)])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[str, Any]]:
    """``(base_url, storage_options)`` of an empty location on local disk, memory:// or moto S3."""
    if request.param == "local":
        yield str(tmp_path / "store"), None
    elif request.param == "memory":
        import fsspec

        root = f"memory://test-{uuid.uuid4().hex[:12]}"
        yield root, None
        fs = fsspec.filesystem("memory")
        if fs.exists(root):
            fs.rm(root, recursive=True)
    else:
        options = request.getfixturevalue("s3_options")
        bucket = request.getfixturevalue("s3_bucket")
        yield f"{bucket}/out", options
