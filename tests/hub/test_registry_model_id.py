"""model_id: stable, safe in paths and hive partitions, and new whenever output would change."""

from __future__ import annotations

import hashlib
import re

import pytest

from stemflow.errors import ConfigError
from stemflow.hub.model_id import (
    canonical_settings_json,
    model_id,
    output_settings,
    parse_model_id,
    settings_hash,
)

SHA = hashlib.sha256(b"weights").hexdigest()
SETTINGS = {"chunk_size": 352800, "num_overlap": 2, "precision": "float32"}
SAFE = re.compile(r"^[a-z0-9._-]+$")


def test_format_and_golden_value() -> None:
    canonical = canonical_settings_json(SETTINGS)
    assert canonical == '{"chunk_size":352800,"num_overlap":2,"precision":"float32"}'
    expected_hash = hashlib.sha256(canonical.encode()).hexdigest()[:8]
    mid = model_id("bs-roformer-viperx-1297", SHA, SETTINGS)
    assert mid == f"bs-roformer-viperx-1297-{SHA[:12]}-s{expected_hash}"
    # pinned literal: changing the recipe changes every stored id, so it must be deliberate
    assert mid == "bs-roformer-viperx-1297-9a129038d9a0-s10db3a21"
    assert SAFE.match(mid) and "=" not in mid and "/" not in mid


def test_stable_across_key_order_number_spelling_and_hash_case() -> None:
    reordered = {"precision": "float32", "num_overlap": 2.0, "chunk_size": 352800}
    assert model_id("m", SHA, reordered) == model_id("m", SHA.upper(), SETTINGS)
    assert model_id("m", SHA, output_settings(chunk_size=352800, num_overlap=2, precision="float32")) == model_id(
        "m", SHA, SETTINGS
    )
    assert settings_hash({"window": (1, 2)}) == settings_hash({"window": [1, 2]})


@pytest.mark.parametrize(
    "changed",
    [
        {"chunk_size": 485100},
        {"num_overlap": 4},
        {"precision": "bfloat16"},
        {"stft_window": "hann"},  # any extra output-changing setting counts
    ],
)
def test_changes_when_settings_change(changed: dict[str, object]) -> None:
    assert model_id("m", SHA, {**SETTINGS, **changed}) != model_id("m", SHA, SETTINGS)


def test_changes_with_weights_and_name() -> None:
    other = hashlib.sha256(b"other weights").hexdigest()
    assert model_id("m", other, SETTINGS) != model_id("m", SHA, SETTINGS)
    assert model_id("n", SHA, SETTINGS) != model_id("m", SHA, SETTINGS)


def test_parse_round_trip() -> None:
    mid = model_id("mel-roformer-kj-vocals", SHA, SETTINGS)
    parts = parse_model_id(mid)
    assert parts.name == "mel-roformer-kj-vocals"
    assert parts.weights_sha256_prefix == SHA[:12]
    assert parts.settings_hash == settings_hash(SETTINGS)
    with pytest.raises(ConfigError, match="not a model_id"):
        parse_model_id("model_id=foo")


@pytest.mark.parametrize("name", ["BS-Roformer", "a/b", "a=b", "", "-leading", "a b"])
def test_unsafe_names_are_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match="registry name"):
        model_id(name, SHA, SETTINGS)


@pytest.mark.parametrize("bad", ["abc", SHA[:-1] + "g", SHA + "0"])
def test_bad_hashes_are_rejected(bad: str) -> None:
    with pytest.raises(ConfigError, match="64 hex"):
        model_id("m", bad, SETTINGS)


@pytest.mark.parametrize(
    "settings", [{"chunk_size": float("nan")}, {"x": object()}, {1: "int key"}, "not a mapping"]
)
def test_unhashable_settings_are_rejected(settings: object) -> None:
    with pytest.raises(ConfigError):
        model_id("m", SHA, settings)  # type: ignore[arg-type]


def test_bool_and_int_are_distinct_settings() -> None:
    assert settings_hash({"tta": True}) != settings_hash({"tta": 1})
