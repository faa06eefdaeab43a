"""Tests of the pure chunk geometry (stemflow.engine.chunking)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from stemflow.engine.chunking import (
    chunk_border,
    chunk_source_indices,
    chunk_step,
    chunk_track_span,
    fade_size,
    fade_window,
    first_track_reads,
    padded_to_track,
    plan_chunks,
)
from stemflow.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "roformer"


def test_step_border_fade():
    assert (chunk_step(3528, 4), chunk_border(3528, 4), fade_size(3528)) == (882, 2646, 352)
    assert (chunk_step(4410, 2), chunk_border(4410, 2), fade_size(4410)) == (2205, 2205, 441)
    assert (chunk_step(352800, 4), chunk_border(352800, 4)) == (88200, 264600)
    assert (chunk_step(10, 3), chunk_border(10, 3)) == (3, 7)
    assert chunk_border(100, 1) == 0


def test_fade_window_values():
    w = fade_window(10)
    assert torch.equal(w, torch.tensor([0.0, 1, 1, 1, 1, 1, 1, 1, 1, 1]))  # fade 1: linspace(0,1,1)=[0]
    w = fade_window(30)
    assert torch.allclose(w[:3], torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(w[-3:], torch.tensor([1.0, 0.5, 0.0]))
    assert torch.all(w[3:-3] == 1)
    assert torch.all(fade_window(30, fade_in=False)[:3] == 1)
    assert torch.all(fade_window(30, fade_out=False)[-3:] == 1)
    assert torch.all(fade_window(9) == 1)  # no fade below 10 samples
    assert fade_window(4410).dtype == torch.float32


@pytest.mark.parametrize("name", ["bs_roformer_4stem", "mel_roformer_vocals"])
def test_plan_matches_reference_geometry(name):
    meta = json.loads((FIXTURES / name / "meta.json").read_text())["demix"]
    plan = plan_chunks(meta["input"]["shape"][1], meta["chunk_size"], meta["num_overlap"])
    assert (plan.step, plan.border, plan.fade) == (meta["step"], meta["border"], meta["fade_size"])
    assert plan.pad == (meta["border"] if meta["reflect_padded_by_border"] else 0)
    assert plan.padded_length == meta["padded_length"]
    got = [f"{c.start}:{c.valid}:{c.tail_pad}" for c in plan.chunks]
    assert got == meta["chunks_start_validlen_pad"]
    assert [c.fade_in for c in plan.chunks] == [False] + [True] * (len(got) - 1)
    assert [c.fade_out for c in plan.chunks] == [True] * (len(got) - 1) + [False]


def test_short_tracks_are_not_padded():
    plan = plan_chunks(1, 3528, 4)
    assert plan.pad == 0 and len(plan.chunks) == 1
    assert plan.chunks[0].valid == 1 and plan.chunks[0].tail_pad == "zeros"
    plan = plan_chunks(2 * 2646, 3528, 4)  # exactly 2 * border: still not padded
    assert plan.pad == 0
    assert plan_chunks(2 * 2646 + 1, 3528, 4).pad == 2646
    plan = plan_chunks(3528, 3528, 1)  # exactly one chunk, no overlap
    assert [(c.start, c.valid, c.tail_pad, c.fade_in, c.fade_out) for c in plan.chunks] == [
        (0, 3528, "none", False, False)
    ]


@pytest.mark.parametrize(
    ("args", "match"),
    [((0, 100, 4), "num_samples"), ((100, 10, 0), "num_overlap"), ((100, 4, 5), "exceed"), ((100, -3, 2), "chunk_size")],
)
def test_plan_rejects_bad_geometry(args, match):
    with pytest.raises(ConfigError, match=match):
        plan_chunks(*args)


def _reference_chunk(padded: torch.Tensor, plan, chunk) -> torch.Tensor:
    """The reference way: slice the padded track, pad the tail."""
    part = padded[:, chunk.start : chunk.start + plan.chunk_size]
    mode = "reflect" if part.shape[-1] > plan.chunk_size // 2 else "constant"
    return nn.functional.pad(part, (0, plan.chunk_size - part.shape[-1]), mode=mode)


@settings(max_examples=100, deadline=None)
@given(length=st.integers(1, 300), chunk_size=st.integers(1, 100), num_overlap=st.integers(1, 6))
def test_chunk_indices_equal_padding_the_track(length, chunk_size, num_overlap):
    num_overlap = min(num_overlap, chunk_size)
    track = torch.arange(1, length + 1, dtype=torch.float32).repeat(2, 1)
    track[1] *= -1
    plan = plan_chunks(length, chunk_size, num_overlap)
    assert plan.chunks[0].start == 0
    assert all(b.start - a.start == plan.step for a, b in zip(plan.chunks, plan.chunks[1:]))
    assert plan.chunks[-1].start < plan.padded_length <= plan.chunks[-1].start + plan.step
    padded = nn.functional.pad(track, (plan.pad, plan.pad), mode="reflect") if plan.pad else track
    for chunk in plan.chunks[:: max(1, len(plan.chunks) // 12)] + plan.chunks[-3:]:
        indices = chunk_source_indices(plan, chunk)
        ours = torch.where(indices >= 0, track[:, indices.clamp(min=0)], torch.zeros(()))
        assert torch.equal(ours, _reference_chunk(padded, plan, chunk))
        first, stop = chunk_track_span(plan, chunk)
        used = indices[indices >= 0]
        assert (first, stop) == (int(used.min()), int(used.max()) + 1)


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 300), chunk_size=st.integers(1, 100), num_overlap=st.integers(1, 6))
def test_first_track_reads_is_the_lowest_sample_any_later_chunk_reads(length, chunk_size, num_overlap):
    plan = plan_chunks(length, chunk_size, min(num_overlap, chunk_size))
    firsts = [chunk_track_span(plan, chunk)[0] for chunk in plan.chunks]
    expected = [min(firsts[i:]) for i in range(len(firsts))]
    assert first_track_reads(plan) == expected


def test_padded_to_track_reflects_without_repeating_the_edge():
    positions = torch.arange(0, 5 + 2 * 3)
    assert padded_to_track(positions, 5, 3).tolist() == [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
