"""A trickling store cannot hang a reader: every storage operation ends within its overall deadline.

The fault proxy's ``trickle`` sends a body a few bytes at a time, each piece well
inside botocore's read timeout, so no per-request timeout ever fires; only the
overall deadline (``RetryPolicy.deadline_s``) ends the read. The elapsed-time
bounds below are hang checks with a wide margin, not speed measurements.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from stemflow.errors import ConfigError, StorageError
from stemflow.store.objects import read_bytes, sha256_object, write_atomic
from stemflow.store.retry import RetryPolicy
from stemflow.store.streams import read_blocks

pytestmark = pytest.mark.s3

BODY = bytes(range(256)) * 256  # 64 KiB: at 256 bytes every 0.5 s, two minutes to send


def _via_proxy(fault_proxy: Any, s3_options_for: Any) -> Any:
    import s3fs

    options = s3_options_for(fault_proxy.url)
    options["config_kwargs"] = {**options["config_kwargs"], "read_timeout": 5, "connect_timeout": 2,
                                "retries": {"total_max_attempts": 1}}
    return s3fs.S3FileSystem(**options, skip_instance_cache=True)


def test_a_trickled_read_ends_at_its_deadline(fault_proxy: Any, fault: Any, s3_bucket: str,
                                              s3_options_for: Any) -> None:
    fs = _via_proxy(fault_proxy, s3_options_for)
    url = f"{s3_bucket}/slow.bin"
    write_atomic(url, BODY, fs)
    assert read_bytes(url, fs) == BODY  # no fault: the whole object
    policy = RetryPolicy(attempts=3, base_delay_s=0.1, deadline_s=3.0)
    for read in (lambda: read_bytes(url, fs, retry=policy), lambda: sha256_object(url, fs, retry=policy),
                 lambda: b"".join(read_blocks(url, fs, retry=policy, block_bytes=16 << 10))):
        fault_proxy.clear()
        fault_proxy.add(fault("trickle", method="GET", path_pattern=r"/slow\.bin", times=10**6,
                              trickle_bytes=256, trickle_interval_s=0.5))
        started = time.monotonic()
        with pytest.raises(StorageError, match="deadline of 3 s"):
            read()
        assert time.monotonic() - started < 30, "the deadline did not end the read"
    fault_proxy.clear()


def test_the_deadline_is_validated() -> None:
    with pytest.raises(ConfigError, match="deadline"):
        RetryPolicy(deadline_s=0)
    assert RetryPolicy(deadline_s=None).deadline_s is None


@pytest.mark.ray
def test_a_trickling_source_is_an_error_row_and_the_worker_goes_on(fault_proxy: Any, fault: Any, s3_bucket: str,
                                                                   s3_options_for: Any, tiny_model: Any,
                                                                   catalogue_kit: Any, tmp_path: Path) -> None:
    from stemflow.hub.spec import ModelSpec
    from stemflow.stage.settings import ShardJob
    from stemflow.stage.worker import TrackWorker

    fs = _via_proxy(fault_proxy, s3_options_for)
    for name, index in (("slow", 1), ("fine", 2)):
        sf.write(tmp_path / f"{name}.wav", catalogue_kit.tone(index).T, catalogue_kit.sample_rate, subtype="PCM_16")
        fs.put_file(str(tmp_path / f"{name}.wav"), f"{s3_bucket}/cat/{name}.wav")
    job = ShardJob(output_url=f"{s3_bucket}/out", model_id="tiny-0123456789ab-s0000cafe", run_id="r1",
                   run_date="2026-11-24", storage_options=fs)
    worker = TrackWorker(ModelSpec(config_path=tiny_model.config, checkpoint_path=tiny_model.checkpoint), job=job,
                         torch_threads=1, retry=RetryPolicy(attempts=2, base_delay_s=0.1, deadline_s=4.0))
    fault_proxy.add(fault("trickle", method="GET", path_pattern=r"/cat/slow\.wav", times=10**6,
                          trickle_bytes=512, trickle_interval_s=0.5))
    outcomes = {}
    for name in ("slow", "fine"):
        url = f"{s3_bucket}/cat/{name}.wav"
        outcomes[name] = worker.finish(worker.separate(f"{name}id", url, worker.fetch(url)))
    fault_proxy.clear()
    assert outcomes["slow"].status == "error" and "deadline" in (outcomes["slow"].error or "")
    assert outcomes["fine"].status == "ok"
