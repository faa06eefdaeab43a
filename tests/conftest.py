"""Suite-wide settings and the fixtures every test folder shares.

Settings: one torch thread in the test process. The suite runs beside Ray
actors, Prefect servers and CLI subprocesses on small machines (CI has 2
cores); torch's default of one thread per core then oversubscribes the CPU and
tiny models run 10-30x slower. Benchmarks, not tests, measure multi-threaded
speed.

Fixtures (use them by name; test modules import no helper module):

* ``repo_root``, ``shared_fixtures``: the checkout and ``../shared/fixtures``;
* ``tiny_model``: the Mel-Band-RoFormer fixture (vocals + the instrumental
  complement), fast enough to separate a one-second track in well under a second;
* ``catalogue_kit``: deterministic test signals, small catalogues with known bad
  files, upload to a store, decoding of stored stems, residual in dB;
* ``moto_server``, ``s3_options``, ``s3_options_for``, ``s3_bucket``: a real moto
  S3 server on 127.0.0.1 that s3fs talks HTTP to (mark such tests ``s3``);
* ``backend``: ``(base_url, storage_options)`` of an empty location on local
  disk, ``memory://`` and moto S3 (parametrised);
* ``fault_proxy``, ``fault``: a real HTTP proxy in front of the moto server that
  injects S3 faults (``tests/fault_proxy.py``), and the fault constructor;
* ``prefect_api``: a temporary Prefect server and database for one test module
  (its API URL), with Prefect's background log and event workers restarted so
  that they report to it and not to a server an earlier module stopped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
SAMPLE_RATE = 44100


# --------------------------------------------------------------------------- paths and the tiny model


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout the tests run from."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """``../shared/fixtures``: reference data used by path, never copied into the repo."""
    return SHARED_FIXTURES


@dataclass(frozen=True)
class TinyModel:
    """Paths of a community-format config and checkpoint (strings, as the flows take them)."""

    config: str
    checkpoint: str


@pytest.fixture(scope="session")
def tiny_model() -> TinyModel:
    """The Mel-Band-RoFormer vocals fixture of ``../shared/fixtures/roformer``."""
    folder = SHARED_FIXTURES / "roformer" / "mel_roformer_vocals"
    return TinyModel(config=str(folder / "config.yaml"), checkpoint=str(folder / "model.ckpt"))


# --------------------------------------------------------------------------- catalogues


class CatalogueKit:
    """Test signals and small catalogues with known content.

    ``bad_files`` maps the bad inputs :meth:`write` adds to a word their error
    rows must contain.
    """

    sample_rate = SAMPLE_RATE
    bad_files = {"bad/empty.wav": "empty", "bad/not-audio.mp3": "decod", "bad/nan.wav": "NaN",
                 "bad/corrupt.flac": "decod"}

    @staticmethod
    def tone(index: int, seconds: float = 1.0) -> np.ndarray:
        """A deterministic stereo ``[2, N]`` float32 signal (two tones plus a little noise)."""
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        rng = np.random.default_rng(index)
        x = np.stack([0.3 * np.sin(2 * np.pi * (220 + 20 * index) * t),
                      0.2 * np.sin(2 * np.pi * (330 + 7 * index) * t)])
        return (x + 0.01 * rng.standard_normal(x.shape)).astype(np.float32)

    def write(self, folder: Path, good: int, *, bad: bool = True, seconds: float = 1.0) -> list[Path]:
        """``good`` 16-bit WAV tracks (``tNN.wav``) plus, with ``bad``, the :attr:`bad_files`."""
        import soundfile as sf

        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(good):
            path = folder / f"t{i:02d}.wav"
            sf.write(path, self.tone(i, seconds).T, SAMPLE_RATE, subtype="PCM_16")
            paths.append(path)
        if bad:
            (folder / "bad").mkdir(exist_ok=True)
            (folder / "bad" / "empty.wav").write_bytes(b"")
            (folder / "bad" / "not-audio.mp3").write_bytes(b"this is a text file, not an mp3\n" * 20)
            nan = np.zeros((4410, 2), np.float32)
            nan[100, 0] = np.nan
            sf.write(folder / "bad" / "nan.wav", nan, SAMPLE_RATE, subtype="FLOAT")
            # a FLAC stream header followed by garbage frames
            flac = folder / "bad" / "corrupt.flac"
            sf.write(flac, self.tone(99, 0.5).T, SAMPLE_RATE, subtype="PCM_16")
            data = flac.read_bytes()
            flac.write_bytes(data[:64] + bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
        return paths

    @staticmethod
    def upload(folder: Path, url: str, storage_options: Any) -> None:
        """Copy a local folder's files under ``url`` (an ``s3://`` prefix in the tests)."""
        from stemflow.store.paths import filesystem

        fs, root = filesystem(url, storage_options)
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                fs.pipe_file(f"{root}/{path.relative_to(folder).as_posix()}", path.read_bytes())

    @staticmethod
    def decode(data: bytes) -> np.ndarray:
        """Decode stored stem bytes to ``[2, N]`` float32."""
        from stemflow.audio.decode import load_audio

        return load_audio(data, sample_rate=None, name="stem").samples

    @staticmethod
    def residual_db(mixture: np.ndarray, stems: list[np.ndarray]) -> float:
        """Energy of ``mixture - sum(stems)`` relative to the mixture, in dB."""
        residual = mixture.astype(np.float64) - np.sum([s.astype(np.float64) for s in stems], axis=0)
        power = np.sum(mixture.astype(np.float64) ** 2)
        return float(10 * np.log10(max(np.sum(residual**2), 1e-30) / power))


@pytest.fixture(scope="session")
def catalogue_kit() -> CatalogueKit:
    """Signals, catalogues, uploads and stem decoding for stage and pipeline tests."""
    return CatalogueKit()


# --------------------------------------------------------------------------- S3 (moto server)


def _s3_storage_options(endpoint_url: str) -> dict[str, Any]:
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint_url},
        "config_kwargs": {"request_checksum_calculation": "when_required"},
    }


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A ``ThreadedMotoServer`` on a free port of 127.0.0.1 for the whole session; its URL."""
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


@pytest.fixture(scope="session")
def s3_options_for() -> Callable[[str], dict[str, Any]]:
    """fsspec/s3fs options for any S3-compatible endpoint URL, with the test credentials."""
    return _s3_storage_options


@pytest.fixture
def s3_options(moto_server: str) -> dict[str, Any]:
    """Storage options reaching the session's moto server."""
    return _s3_storage_options(moto_server)


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
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Any]]:
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


# --------------------------------------------------------------------------- S3 faults


@pytest.fixture
def fault_proxy(moto_server: str) -> Iterator[Any]:
    """A running fault-injecting HTTP proxy in front of the moto server.

    ``.url``, ``.add(fault, ...)``, ``.clear()``, ``.log``, ``.injected(kind)``, and
    ``.storage_options``: s3fs options that reach the moto server through it.
    """
    from fault_proxy import FaultProxy

    with FaultProxy(moto_server, seed=7) as running:
        running.storage_options = _s3_storage_options(running.url)
        yield running


@pytest.fixture(scope="session")
def fault() -> type:
    """The fault description class of ``tests/fault_proxy.py`` (``fault("slowdown", method="PUT", ...)``)."""
    from fault_proxy import Fault

    return Fault


# --------------------------------------------------------------------------- Prefect


def _restart_prefect_services() -> None:
    """Drain and stop Prefect's background workers (API logs, events).

    They are process-wide singletons that keep the API client of the server that was
    current when they started; after an earlier module's server stopped, a flow's logs
    and events would go there (404s) instead of to this module's server. Stopped
    workers are recreated on first use with the current settings.
    """
    from prefect._internal.concurrency.services import QueueService

    QueueService.drain_all(timeout=30, at_exit=False)


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    """A temporary Prefect server + database for this module; its API URL (mark such tests ``prefect``)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
    from prefect.testing.utilities import prefect_test_harness

    _restart_prefect_services()
    # a loaded 2-core machine can take minutes to import and migrate the server
    with prefect_test_harness(server_startup_timeout=max(300, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())):
        yield str(PREFECT_API_URL.value())
        _restart_prefect_services()
