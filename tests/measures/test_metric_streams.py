"""Block-by-block reference metrics equal the whole-array ones (stemflow.measures.metric_streams)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stemflow.measures import metrics
from stemflow.measures.metric_streams import (
    BleedlessFullnessStream,
    CsdrStream,
    L1FreqStream,
    MetricStream,
    SiSdrStream,
    StemMetricsStream,
    UsdrStream,
)

RATE = 8000
SCHEDULES = ([0, 1, 7, 333, 0, 5001], [4096], [10**6])


def _push_all(stream: MetricStream, ref: np.ndarray, est: np.ndarray, sizes: list[int]) -> object:
    for index in range(stream.passes):
        if index:
            stream.next_pass()
        start = step = 0
        while start < ref.shape[1]:
            size = sizes[step % len(sizes)]
            step += 1
            stream.push(ref[:, start : start + size], est[:, start : start + size])
            start += size
    return stream.result()


def _pair(n: int, seed: int, *, silent_head: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((2, n)).astype(np.float32)
    est = (ref + 0.3 * rng.standard_normal((2, n))).astype(np.float32)
    ref[:, :silent_head] = 0
    return ref, est


def _close(got: float, want: float) -> bool:
    if math.isnan(want) or math.isinf(want):
        return got == want or (math.isnan(got) and math.isnan(want))
    return abs(got - want) <= 1e-9 * max(1.0, abs(want))


@pytest.mark.parametrize("n", [1, 5, 1025, 7999, 8000, 8001, 30011])
@pytest.mark.parametrize("sizes", SCHEDULES)
def test_streams_equal_whole_array(n: int, sizes: list[int]) -> None:
    ref, est = _pair(n, n, silent_head=min(n, 8000) if n > 20000 else 0)
    assert _close(_push_all(CsdrStream(RATE), ref, est, sizes), metrics.csdr(ref, est, RATE))
    assert _close(_push_all(UsdrStream(), ref, est, sizes), metrics.sdr(ref, est))
    assert _close(_push_all(SiSdrStream(), ref, est, sizes), metrics.si_sdr(ref, est))
    assert _close(
        _push_all(SiSdrStream(zero_mean=True), ref, est, sizes),
        metrics.si_sdr(ref, est, zero_mean=True),
    )
    got = _push_all(BleedlessFullnessStream(RATE), ref, est, sizes)
    want = metrics.bleedless_fullness(ref, est, RATE)
    assert _close(got[0], want[0]) and _close(got[1], want[1])
    if n > 1024:
        assert _close(_push_all(L1FreqStream(), ref, est, sizes), metrics.l1_freq(ref, est))


def test_csdr_frames_follow_the_track_not_the_blocks() -> None:
    ref, est = _pair(3 * RATE + 17, 3, silent_head=RATE)  # frame 0 silent: NaN, the 17-sample tail is dropped
    stream = CsdrStream(RATE)
    _push_all(stream, ref, est, [999])
    frames = stream.frame_sdr()
    want = metrics.framewise_sdr(ref, est, RATE)
    assert frames.shape == (3,) and math.isnan(frames[0])
    np.testing.assert_allclose(frames[1:], want[1:], rtol=1e-12)


def test_exact_estimate_keeps_the_special_values() -> None:
    ref, _ = _pair(2 * RATE, 4)
    scores = _push_all(StemMetricsStream(RATE), ref, ref.copy(), [1234])
    assert scores["csdr_db"] == math.inf
    assert _close(scores["si_sdr_db"], metrics.si_sdr(ref, ref))  # residual exactly 0: eps decides
    assert (scores["bleedless"], scores["fullness"]) == (100.0, 100.0)
    assert _close(scores["usdr_db"], metrics.sdr(ref, ref))


def test_silent_reference() -> None:
    ref = np.zeros((2, 2 * RATE), np.float32)
    _, est = _pair(2 * RATE, 5)
    assert math.isnan(_push_all(CsdrStream(RATE), ref, est, [500]))
    assert math.isnan(_push_all(SiSdrStream(), ref, est, [500]))


def test_misuse_is_reported() -> None:
    ref, est = _pair(RATE, 6)
    with pytest.raises(ValueError, match="same shape"):
        UsdrStream().push(ref, est[:, :-1])
    with pytest.raises(ValueError, match="2 passes"):
        stream = SiSdrStream()
        stream.push(ref, est)
        stream.result()
    with pytest.raises(ValueError, match="too short"):
        stream = L1FreqStream()
        stream.push(ref[:, :1024], est[:, :1024])
        stream.result()
    with pytest.raises(ValueError, match="no sample"):
        UsdrStream().result()
