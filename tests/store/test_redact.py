"""No secret from the settings reaches an output: the redaction rules, and the files that use them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stemflow.evaluation.references import References
from stemflow.evaluation.results import write_evaluation
from stemflow.evaluation.scoring import baseline_rows, metrics_table
from stemflow.store.redact import REDACTED, is_secret_key, redact, redact_text
from stemflow.store.runs import RunManifest, read_run_manifest, write_run_manifest

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"

# the case: a Ray runtime_env in the stage settings, env vars holding AWS keys
STAGE = {
    "workers": 2,
    "runtime_env": {"env_vars": {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
                                 "AWS_SESSION_TOKEN": TOKEN, "DATABASE_URL": "postgres://u:hunter2@db/x",
                                 "OMP_NUM_THREADS": "1"},
                    "pip": ["numpy"]},
}
STORAGE = {"key": KEY_ID, "secret": SECRET, "token": TOKEN,
           "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"},
           "config_kwargs": {"retries": {"total_max_attempts": 5}}}


def _secrets_in(text: str) -> list[str]:
    return [s for s in (SECRET, KEY_ID, TOKEN, "hunter2") if s in text]


def test_secret_keys_at_any_depth_are_masked_and_the_rest_kept() -> None:
    settings = {"stage": STAGE, "storage_options": STORAGE, "chunk_size": 352800, "num_overlap": 2,
                "model": "mel-roformer", "headers": {"X-Anything": "opaque"}, "password": None,
                "nested": [{"apiKey": "k1"}, {"hf_token": "t1"}, {"aws_profile": "prod"}, ("s3://u:pw@bucket/x",)],
                "keyframes": 3, "monkey": "banana", "max_tokens": 7, "source": f"mixed {KEY_ID} text"}
    masked = redact(settings)
    assert masked["stage"]["runtime_env"]["env_vars"] == {k: REDACTED for k in STAGE["runtime_env"]["env_vars"]}
    assert masked["stage"]["runtime_env"]["pip"] == ["numpy"] and masked["stage"]["workers"] == 2
    assert masked["storage_options"] == {**STORAGE, "key": REDACTED, "secret": REDACTED, "token": REDACTED}
    assert masked["headers"] == {"X-Anything": REDACTED} and masked["password"] is None
    assert masked["nested"] == [{"apiKey": REDACTED}, {"hf_token": REDACTED}, {"aws_profile": REDACTED},
                                [f"s3://u:{REDACTED}@bucket/x"]]
    assert (masked["chunk_size"], masked["num_overlap"], masked["model"]) == (352800, 2, "mel-roformer")
    assert (masked["keyframes"], masked["monkey"], masked["max_tokens"]) == (3, "banana", 7)
    assert masked["source"] == f"mixed {REDACTED} text"
    assert settings["storage_options"]["secret"] == SECRET  # the input is not modified
    assert _secrets_in(json.dumps(masked)) == []


def test_key_words() -> None:
    for key in ("key", "secret", "token", "password", "credentials", "AWS_REGION", "aws_access_key_id",
                "sessionToken", "client-secret", "Authorization", "api.key", "private_key_path"):
        assert is_secret_key(key), key
    for key in ("chunk_size", "endpoint_url", "keyframes", "monkey", "model_id", "tokenizer", "run_id", 3):
        assert not is_secret_key(key), key
    assert redact_text("https://user:p%40ss@host/x and https://host/y") == f"https://user:{REDACTED}@host/x and https://host/y"


def test_the_run_manifest_never_holds_the_runtime_env_secrets(tmp_path: Path) -> None:
    manifest = RunManifest(run_id="r1", status="running", started_at="2026-11-24T10:00:00+00:00",
                           inputs={"catalogue_url": "s3://cat/", "out_url": str(tmp_path)},
                           settings={**STAGE, "storage_options": STORAGE, "chunk_size": 352800})
    url = write_run_manifest(str(tmp_path), manifest)
    text = Path(url).read_text()
    assert _secrets_in(text) == []
    stored = read_run_manifest(str(tmp_path), "r1")
    assert stored.settings["runtime_env"]["env_vars"]["AWS_SECRET_ACCESS_KEY"] == REDACTED
    assert stored.settings["chunk_size"] == 352800 and stored.inputs["catalogue_url"] == "s3://cat/"


def test_an_evaluation_never_stores_the_secrets_of_its_settings(tmp_path: Path) -> None:
    tone = np.stack([np.sin(np.arange(8000) / 10.0)] * 2).astype(np.float32)
    references = References(tone, {"vocals": tone * 0.5, "instrumental": tone * 0.5}, 8000)
    metrics = metrics_table(baseline_rows("t1", references))
    urls = write_evaluation(str(tmp_path), "eval-x", metrics, info={"stage": STAGE, "storage_options": STORAGE})
    text = Path(urls["leaderboard.json"]).read_text()
    assert _secrets_in(text) == [] and REDACTED in text
