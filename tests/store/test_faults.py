"""Object-store faults against real components: moto S3 behind a fault-injecting proxy.

s3fs talks HTTP to the ``fault_proxy`` fixture (``tests/fault_proxy.py``), which
forwards to the ``moto_server`` fixture's server and injects throttling (503 SlowDown), connection
resets (before the request, after it was applied, mid-body) and stalls past the
client's read timeout. Each layer of retry is tested where it acts: botocore's
(``config_kwargs["retries"]``), and stemflow's own (:mod:`stemflow.store.retry`) with
s3fs's and botocore's switched off so that only ours can save the call. Then the
exactly-once invariants under faults: a track whose writes keep failing becomes
an error outcome with no marker; every marker's stems exist with its sha256.
"""

from __future__ import annotations

import errno
import random
import time
from pathlib import Path
from typing import Any

import pytest

from stemflow.errors import StorageError
from stemflow.store.commit import (
    MARKER_NAME,
    StemObject,
    commit_track,
    committed_tracks,
    read_marker,
    verify_track,
    write_stem,
)
from stemflow.store.objects import read_bytes, sha256_hex, write_atomic, write_create_only
from stemflow.store.retry import RetryPolicy, call_with_retry, is_transient

FAST = RetryPolicy(attempts=4, base_delay_s=0.05, max_delay_s=0.2)


# --------------------------------------------------------------------------- the policy itself


def test_backoff_is_exponential_with_full_jitter_and_bounded() -> None:
    calls, waits = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionResetError(errno.ECONNRESET, "reset by peer")
        return "done"

    policy = RetryPolicy(attempts=5, base_delay_s=0.25, multiplier=2.0, max_delay_s=0.6)
    assert call_with_retry(flaky, what="op", policy=policy, rng=random.Random(1), sleep=waits.append) == "done"
    assert len(calls) == 4 and len(waits) == 3
    ceilings = [policy.ceiling_s(k) for k in range(3)]
    assert ceilings == [0.25, 0.5, 0.6]  # doubled, then capped
    assert all(0 <= w < c for w, c in zip(waits, ceilings))
    assert len(set(waits)) == 3  # jittered, not lockstep
    # jitter is full: over many draws the waits cover [0, ceiling)
    draws = [policy.delay_s(1, random.Random(s)) for s in range(200)]
    assert min(draws) < 0.05 and max(draws) > 0.45


def test_exhausted_retries_raise_storage_error_and_final_errors_are_not_retried() -> None:
    waits: list[float] = []
    calls: list[int] = []

    def always(error: BaseException) -> Any:
        def op() -> None:
            calls.append(1)
            raise error
        return op

    with pytest.raises(StorageError, match=r"write s3://b/k failed after 3 attempts: TimeoutError"):
        call_with_retry(always(TimeoutError("read timed out")), what="write s3://b/k",
                        policy=RetryPolicy(attempts=3), sleep=waits.append)
    assert len(calls) == 3 and len(waits) == 2
    for final in (FileNotFoundError("k"), FileExistsError("k"), PermissionError("denied"),
                  OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EROFS, "read-only"),
                  ValueError("bad argument")):
        calls.clear()
        with pytest.raises(type(final)):
            call_with_retry(always(final), what="op", policy=RetryPolicy(attempts=3), sleep=waits.append)
        assert len(calls) == 1 and not is_transient(final)
    assert is_transient(OSError(errno.EIO, "SlowDown")) and is_transient(ConnectionResetError())


# --------------------------------------------------------------------------- S3 through the proxy


def _options(proxy: Any, *, botocore_attempts: int, mode: str = "standard",
             read_timeout: float = 5.0) -> dict[str, Any]:
    options = dict(proxy.storage_options)
    options["config_kwargs"] = {
        **options["config_kwargs"],
        "retries": {"total_max_attempts": botocore_attempts, "mode": mode},
        "read_timeout": read_timeout,
        "connect_timeout": 2,
    }
    return options


def _bare_fs(proxy: Any, **kwargs: Any) -> Any:
    """An s3fs filesystem with botocore and s3fs retries off: only stemflow's retry can help."""
    import s3fs

    fs = s3fs.S3FileSystem(**_options(proxy, botocore_attempts=1, **kwargs), skip_instance_cache=True)
    fs.retries = 1
    return fs


@pytest.mark.s3
@pytest.mark.parametrize("mode", ["standard", "adaptive"])
def test_throttled_put_is_retried_by_botocore(fault_proxy: Any, fault: Any, s3_bucket: str, mode: str) -> None:
    fault_proxy.add(fault("slowdown", method="PUT", path_pattern=r"/throttled\.bin", times=2))
    options = _options(fault_proxy, botocore_attempts=4, mode=mode)
    write_atomic(f"{s3_bucket}/throttled.bin", b"payload", options)
    assert len(fault_proxy.injected("slowdown")) == 2
    assert [r.status for r in fault_proxy.log if r.method == "PUT"] == [503, 503, 200]
    assert read_bytes(f"{s3_bucket}/throttled.bin", options) == b"payload"


@pytest.mark.s3
@pytest.mark.parametrize("kind", ["slowdown", "reset", "error500"])
def test_stemflow_retries_writes_when_the_client_gives_up(
    fault_proxy: Any, fault: Any, s3_bucket: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    fs = _bare_fs(fault_proxy)
    fault_proxy.add(fault(kind, method="PUT", path_pattern=r"/obj\.bin", times=3))
    with caplog.at_level("WARNING", logger="stemflow.store.retry"):
        write_atomic(f"{s3_bucket}/obj.bin", b"x" * 1000, fs, retry=FAST)
    assert len(fault_proxy.injected(kind)) == 3
    retries = [r for r in caplog.records if r.name == "stemflow.store.retry"]
    assert 1 <= len(retries) <= 3 and all("write s3://" in r.getMessage() for r in retries)
    assert read_bytes(f"{s3_bucket}/obj.bin", fs) == b"x" * 1000
    # a fault that outlasts every layer is a clear StorageError naming the object
    fault_proxy.add(fault(kind, method="PUT", path_pattern=r"/obj2\.bin", times=10**6))
    with pytest.raises(StorageError, match=r"obj2\.bin.* failed after 3 attempts"):
        write_atomic(f"{s3_bucket}/obj2.bin", b"y", fs, retry=RetryPolicy(attempts=3, base_delay_s=0.01))
    assert not fs.exists(f"{s3_bucket}/obj2.bin")


@pytest.mark.s3
def test_stall_past_the_read_timeout_and_reset_mid_body_are_retried_on_reads(
    fault_proxy: Any, fault: Any, s3_bucket: str
) -> None:
    fs = _bare_fs(fault_proxy, read_timeout=0.5)
    data = bytes(range(256)) * 400
    write_atomic(f"{s3_bucket}/read.bin", data, fs)
    fault_proxy.add(fault("stall", method="GET", path_pattern=r"/read\.bin", stall_s=1.5),
              fault("truncate", method="GET", path_pattern=r"/read\.bin"))  # counts only GETs the stall let by
    started = time.monotonic()
    assert read_bytes(f"{s3_bucket}/read.bin", fs, retry=FAST) == data
    assert len(fault_proxy.injected("stall")) == 1 and len(fault_proxy.injected("truncate")) == 1
    assert time.monotonic() - started < 10


@pytest.mark.s3
def test_a_lost_reply_to_a_create_only_put_still_commits_exactly_once(
    fault_proxy: Any, fault: Any, s3_bucket: str
) -> None:
    fs = _bare_fs(fault_proxy)
    out = f"{s3_bucket}/out"
    # the stem PUT and the marker PUT both reach moto, but their replies are lost
    fault_proxy.add(fault("reset_after", method="PUT", path_pattern=r"/vocals\.flac"),
              fault("reset_after", method="PUT", path_pattern=MARKER_NAME))
    stem = write_stem(out, "m1", "t1", "vocals", "flac", b"stem-bytes", storage_options=fs)
    assert stem == StemObject("vocals", "vocals.flac", 10, sha256_hex(b"stem-bytes"))
    won = commit_track(out, "m1", "t1", [stem], source_url="s3://cat/a.wav", run_id="r1", storage_options=fs)
    assert won, "our own marker, written on the first attempt, must count as our commit"
    assert len(fault_proxy.injected("reset_after")) == 2
    assert verify_track(out, "m1", "t1", storage_options=fs)
    # a second writer still loses, and the marker is unchanged
    assert not commit_track(out, "m1", "t1", [stem], source_url="s3://cat/a.wav", run_id="r2", storage_options=fs)
    assert read_marker(out, "m1", "t1", storage_options=fs).run_id == "r1"
    assert not write_create_only(f"{out}/stems/m1/t1/{MARKER_NAME}", b"{}", fs)


# --------------------------------------------------------------------------- tracks under faults


def _wav(kit: Any, index: int) -> bytes:
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, kit.tone(index, 0.5).T, 44100, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def assert_exactly_once_invariant(out: str, model_id: str, storage_options: Any) -> set[str]:
    """Every marker lists stems that exist with its sha256; no marker is partial. The committed ids."""
    committed = set(committed_tracks(out, model_id, storage_options=storage_options))
    for track_id in committed:
        assert verify_track(out, model_id, track_id, storage_options=storage_options), track_id
    return committed


@pytest.mark.s3
def test_persistent_faults_become_error_outcomes_with_no_partial_commit(
    fault_proxy: Any, fault: Any, s3_bucket: str, tmp_path: Path, tiny_model: Any, catalogue_kit: Any
) -> None:
    pytest.importorskip("ray")
    from stemflow.hub.spec import ModelSpec
    from stemflow.stage.settings import ShardJob, StageSettings
    from stemflow.stage.worker import TrackWorker

    options = _bare_fs(fault_proxy)  # botocore and s3fs retries off: the stage's own policy decides
    cat, out = f"{s3_bucket}/cat", f"{s3_bucket}/out"
    fs = options
    for i in range(4):
        fs.pipe_file(f"{cat}/t{i}.wav", _wav(catalogue_kit, i))
    job = ShardJob(output_url=out, model_id="m-faults", run_id="r1", run_date="2026-11-24", storage_options=options)
    worker = TrackWorker(ModelSpec(config_path=tiny_model.config, checkpoint_path=tiny_model.checkpoint, batch_size=8),
                         job=job, torch_threads=1)
    # t0: a transient throttle on its stem (recovers); t1: its marker PUT always throttled;
    # t2: its vocals PUT always reset; t3: its source GET always reset
    fault_proxy.add(fault("slowdown", method="PUT", path_pattern=r"/t0id/vocals", times=3),
              fault("slowdown", method="PUT", path_pattern=r"/t1id/_COMMITTED", times=10**6),
              fault("reset", method="PUT", path_pattern=r"/t2id/vocals", times=10**6),
              fault("reset", method="GET", path_pattern=r"/cat/t3\.wav", times=10**6))
    outcomes = {}
    for i in range(4):
        url = f"{cat}/t{i}.wav"
        separated = worker.separate(f"t{i}id", url, worker.fetch(url))
        outcomes[i] = worker.finish(separated)
    assert outcomes[0].status == "ok" and len(outcomes[0].rows) == 2
    for i in (1, 2, 3):
        assert outcomes[i].status == "error", outcomes[i]
        assert "attempts" in (outcomes[i].error or ""), outcomes[i].error
        (row,) = outcomes[i].rows
        assert row["status"] == "error" and row["track_id"] == f"t{i}id"
    assert assert_exactly_once_invariant(out, "m-faults", options) == {"t0id"}
    # the failed marker left stems without a marker: not committed, and readers ignore them
    assert fs.exists(f"{out}/stems/m-faults/t1id/vocals.flac")
    assert not fs.exists(f"{out}/stems/m-faults/t1id/{MARKER_NAME}")
    # faults gone: a retry of the failed tracks commits them, adopting the stems left behind
    fault_proxy.clear()
    for i in (1, 2, 3):
        url = f"{cat}/t{i}.wav"
        assert worker.finish(worker.separate(f"t{i}id", url, worker.fetch(url))).status == "ok"
    assert assert_exactly_once_invariant(out, "m-faults", options) == {"t0id", "t1id", "t2id", "t3id"}
    # the stage settings set the policy the worker uses
    fs.pipe_file(f"{cat}/t4.wav", _wav(catalogue_kit, 4))
    url = f"{cat}/t4.wav"
    fault_proxy.add(fault("slowdown", method="GET", path_pattern=r"/cat/t4\.wav", times=10**6))
    for attempts in (2, 3):
        worker.retry = StageSettings(retry_attempts=attempts, retry_base_delay_s=0.01).retry_policy()
        outcome = worker.finish(worker.separate("t4id", url, worker.fetch(url)))
        assert outcome.status == "error" and f"failed after {attempts} attempts" in (outcome.error or "")
