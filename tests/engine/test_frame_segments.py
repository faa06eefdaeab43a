"""A model run in STFT-frame segments (Spleeter): the engine's result equals the one-STFT whole-track result.

A small Spleeter (random weights, 256-point frames, 64-frame segments) keeps
every path cheap: the in-memory separator at any batch size, packed tracks,
the bounded-memory file-to-file path; plus the pure geometry of the plan.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from stemflow.engine.chunking import chunk_source_indices, first_track_reads, plan_for, plan_frame_segments
from stemflow.engine.separator import Separator
from stemflow.engine.streaming import separate_file
from stemflow.errors import ConfigError
from stemflow.models.config import config_from_dict
from stemflow.models.segmentation import CrossfadeChunks, FrameSegments
from stemflow.models.spleeter.model import SpleeterUNetSeparator

RATE = 44100
SMALL: dict[str, Any] = dict(
    instruments=["vocals", "accompaniment"], conv_n_filters=[2, 2, 2, 2, 2, 4], frame_length=256,
    frame_step=64, segment_frames=64, num_bins=64,
)
SPAN = 63 * 64 + 256  # samples under one 64-frame segment


def small_spleeter(seed: int = 0) -> SpleeterUNetSeparator:
    torch.manual_seed(seed)
    model = SpleeterUNetSeparator(**SMALL).eval()
    with torch.no_grad():  # batch-norm statistics that make the masks vary
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    model.config = config_from_dict({
        "model_type": "spleeter", "audio": {"chunk_size": SPAN, "sample_rate": RATE},
        "model": SMALL, "training": {"instruments": ["vocals", "accompaniment"], "target_instrument": None},
        "inference": {"batch_size": 2, "num_overlap": 1},
    }, source="small-spleeter")
    return model


def mix(length: int, seed: int = 0) -> np.ndarray:
    t = np.arange(length) / RATE
    rng = np.random.default_rng(seed)
    tone = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.2 * np.sign(np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * 1200 * t)
    audio = np.stack([tone, 0.8 * tone]) + 0.05 * rng.standard_normal((2, length))
    return audio.astype(np.float32)


def whole_track(model: SpleeterUNetSeparator, audio: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.separate_waveform(torch.from_numpy(audio)).numpy()


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    error = np.sum((reference.astype(np.float64) - estimate) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(error, 1e-300)))


@pytest.mark.parametrize("length", [1, 100, 4095, SPAN - 256, 64 * 64, 3 * 64 * 64 + 17, 20000])
def test_plan_covers_every_frame_once_with_zero_padding(length: int) -> None:
    segmentation = FrameSegments(frame_length=256, frame_step=64, segment_frames=64, lead=256)
    plan = plan_frame_segments(length, segmentation)
    frames = -(-(length + 256) // 64)  # tf.signal.stft(pad_end=True) of the zero-prefixed track
    assert len(plan.chunks) == -(-frames // 64)
    assert [c.start for c in plan.chunks] == [k * 64 * 64 for k in range(len(plan.chunks))]
    assert all(c.valid == plan.chunk_size == SPAN for c in plan.chunks)
    assert plan.summed and plan.pad == 256 and plan.padded_length >= plan.pad + length
    for chunk in plan.chunks:
        indices = chunk_source_indices(plan, chunk)
        inside = indices >= 0
        expected = torch.arange(SPAN) + chunk.start - 256
        assert torch.equal(indices[inside], expected[inside])
        assert bool(((expected < 0) | (expected >= length))[~inside].all())
        assert bool(inside.any())  # every segment reads some of the track
    assert first_track_reads(plan) == [max(c.start - 256, 0) for c in plan.chunks]
    assert plan_for(length, segmentation) == plan
    assert plan_for(length, CrossfadeChunks(512, 4)).chunk_size == 512


@pytest.mark.parametrize("length", [1, 3000, SPAN, 64 * 64 * 3 + 5, 21000])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_engine_equals_one_stft_over_the_track(length: int, batch_size: int) -> None:
    model = small_spleeter()
    audio = mix(length, seed=length)
    separator = Separator(model, batch_size=batch_size)
    assert (separator.chunk_size, separator.num_overlap) == (SPAN, 1)
    stems = separator.separate(audio, RATE)
    reference = whole_track(model, audio)
    for row, stem in enumerate(("vocals", "accompaniment")):
        assert stems[stem].shape == (2, length)
        assert snr_db(reference[row], stems[stem]) >= 100.0, stem  # float rounding only


def test_packed_tracks_and_streaming_give_the_whole_track_result(tmp_path) -> None:
    model = small_spleeter(seed=3)
    tracks = [mix(n, seed=n) for n in (9000, 17, 30001)]
    separator = Separator(model, batch_size=4)
    packed = separator.separate_many(tracks, RATE)
    for audio, stems in zip(tracks, packed):
        reference = whole_track(model, audio)
        assert snr_db(reference[0], stems["vocals"]) >= 100.0
    sf.write(tmp_path / "long.wav", tracks[2].T, RATE, subtype="FLOAT")
    outputs = {"vocals": tmp_path / "v.wav", "accompaniment": tmp_path / "a.wav"}
    streaming = Separator(model, batch_size=1)
    result = separate_file(streaming, tmp_path / "long.wav", outputs, block_seconds=0.05, bit_depth=32)
    reference = whole_track(model, tracks[2])
    streamed = sf.read(outputs["vocals"], dtype="float32")[0].T
    assert snr_db(reference[0], streamed) >= 100.0
    assert result.peak_buffered_frames <= 2 * (SPAN + 64 * 64) + 0.05 * RATE  # a few segments, not the 8 of the track


def test_the_model_fixes_its_segmentation() -> None:
    model = small_spleeter()
    with pytest.raises(ConfigError, match="64-frame segments"):
        Separator(model, chunk_size=4096)
    with pytest.raises(ConfigError, match="do not apply"):
        Separator(model, num_overlap=2)
    assert Separator(model, chunk_size=SPAN, num_overlap=1).segmentation == model.segmentation()
    with pytest.raises(ValueError, match="segment is"):
        model.separate_segments(torch.zeros(1, 2, SPAN + 1))
    with pytest.raises(ConfigError, match="positive"):
        FrameSegments(frame_length=256, frame_step=0, segment_frames=64, lead=256)
