"""The community-config loader: the tuple tag, sections, inference of the architecture, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stemflow.errors import ConfigError
from stemflow.models.config import config_from_dict, load_config, parse_yaml

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "roformer"


def test_fixture_configs_load_with_the_tuple_tag() -> None:
    bs = load_config(FIXTURES / "bs_roformer_4stem" / "config.yaml")
    assert bs.model_type == "bs_roformer"
    assert bs.audio.chunk_size == 3528 and bs.audio.sample_rate == 44100
    assert bs.inference.num_overlap == 4 and bs.inference.batch_size == 1
    assert bs.instruments == ("drums", "bass", "other", "vocals")
    assert bs.stems == bs.model_stems == bs.instruments
    assert isinstance(bs.model["freqs_per_bands"], tuple) and sum(bs.model["freqs_per_bands"]) == 1025

    mel = load_config(FIXTURES / "mel_roformer_vocals" / "config.yaml")
    assert mel.model_type == "mel_band_roformer"
    assert mel.model_stems == ("vocals",)
    assert mel.stems == ("vocals", "instrumental")
    assert mel.complement_stem == "instrumental"


def test_safe_loader_refuses_arbitrary_python_objects() -> None:
    text = "model: !!python/object/apply:os.system ['echo pwned']\n"
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_yaml(text)
    # the plain safe loader refuses the tuple tag that reference configs use; ours reads it
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load("a: !!python/tuple [1, 2]")
    assert parse_yaml("a: !!python/tuple [1, 2]") == {"a": (1, 2)}


def _minimal(**over: object) -> dict:
    data = {
        "audio": {"chunk_size": 4410, "sample_rate": 44100},
        "model": {"dim": 8, "num_bands": 4},
        "training": {"instruments": ["drums", "bass"], "target_instrument": None},
        "inference": {"num_overlap": 2},
    }
    data.update(over)
    return data


def test_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="missing 'model' section"):
        config_from_dict({k: v for k, v in _minimal().items() if k != "model"})
    with pytest.raises(ConfigError, match="chunk_size"):
        config_from_dict(_minimal(audio={"sample_rate": 44100}))
    with pytest.raises(ConfigError, match="positive integer"):
        config_from_dict(_minimal(inference={"num_overlap": 0}))
    with pytest.raises(ConfigError, match="target_instrument 'vocals' is not in"):
        config_from_dict(_minimal(training={"instruments": ["drums"], "target_instrument": "vocals"}))
    with pytest.raises(ConfigError, match="model_type"):
        config_from_dict(_minimal(model={"dim": 8}))


def test_unknown_sections_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    cfg = config_from_dict(_minimal(surprise={"x": 1}), source="cfg.yaml")
    assert cfg.unknown_sections == ("surprise",)
    assert "surprise" in caplog.text and "cfg.yaml" in caplog.text


def test_explicit_model_type_and_non_vocal_target() -> None:
    cfg = config_from_dict(
        _minimal(model={"dim": 8}, model_type="spleeter",
                 training={"instruments": ["drums", "bass"], "target_instrument": "drums"})
    )
    assert cfg.model_type == "spleeter"
    assert cfg.stems == ("drums", "no_drums")
