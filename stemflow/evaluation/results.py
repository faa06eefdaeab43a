"""Where an evaluation is stored, and writing and reading it back: ``<out>/evaluation/<eval_id>/``.

One evaluation is one folder, every file written atomically::

    <out>/evaluation/<eval_id>/metrics.parquet       one row per (model, track, stem) (stemflow.evaluation.scoring)
    <out>/evaluation/<eval_id>/leaderboard.parquet   one row per (model, stem) (stemflow.evaluation.leaderboard)
    <out>/evaluation/<eval_id>/leaderboard.json      the same rows plus ``info`` (data set, models, settings)
    <out>/evaluation/<eval_id>/leaderboard.md        the Markdown table with the SDR definitions

``eval_id`` is ``eval-YYYYMMDDTHHMMSSffffffZ-<8 hex>`` (:func:`new_eval_id`): UTC to the
microsecond, so folders sort by time, plus 32 random bits, so two evaluations
started at the same instant (two flows, two machines) never share a folder.
Non-finite floats are null in ``leaderboard.json`` (JSON has no NaN or infinity).
"""

from __future__ import annotations

import io
import json
import math
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stemflow.errors import StorageError
from stemflow.evaluation.leaderboard import leaderboard, leaderboard_markdown, reported_notes
from stemflow.store.objects import read_bytes, write_atomic
from stemflow.store.paths import StorageOptions, filesystem, join_url
from stemflow.store.redact import redact


def _json_safe(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def new_eval_id(now: datetime | None = None) -> str:
    """``eval-YYYYMMDDTHHMMSSffffffZ-<8 hex>`` (UTC, microseconds, random suffix): sortable and collision-free."""
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"eval-{stamp}-{secrets.token_hex(4)}"


def evaluation_url(output_url: str, eval_id: str) -> str:
    """``<out>/evaluation/<eval_id>``."""
    return join_url(output_url, "evaluation", eval_id)


def write_evaluation(
    output_url: str, eval_id: str, metrics: pa.Table, *, storage_options: StorageOptions = None,
    info: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Write ``metrics.parquet`` and the leaderboard (``.parquet``, ``.json``, ``.md``), each atomically.

    ``info`` (data set, models, settings) is stored in ``leaderboard.json`` next to the rows,
    secrets masked (:func:`stemflow.store.redact.redact`);
    its ``models`` entries' ``reported_sdr`` texts are quoted under the Markdown table.
    Returns the URLs written, keyed by file name.
    """
    base = evaluation_url(output_url, eval_id)
    board = leaderboard(metrics)
    payloads: dict[str, bytes] = {}
    for name, table in (("metrics.parquet", metrics), ("leaderboard.parquet", board)):
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        payloads[name] = buffer.getvalue()
    body = {"eval_id": eval_id, "info": redact(dict(info or {})),
            "rows": [{k: _json_safe(v) for k, v in row.items()} for row in board.to_pylist()]}
    payloads["leaderboard.json"] = json.dumps(body, indent=1, default=str).encode()
    payloads["leaderboard.md"] = leaderboard_markdown(board, reported_notes(info)).encode()
    urls = {}
    for name, data in payloads.items():
        urls[name] = f"{base}/{name}"
        write_atomic(urls[name], data, storage_options)
    return urls


def read_evaluations(output_url: str, *, storage_options: StorageOptions = None) -> dict[str, pa.Table]:
    """Every ``<out>/evaluation/<eval_id>/metrics.parquet``, keyed by ``eval_id`` (sorted)."""
    fs, root = filesystem(join_url(output_url, "evaluation"), storage_options)
    try:
        if not fs.exists(root):
            return {}
        found = sorted(p for p in fs.find(root) if p.endswith("/metrics.parquet"))
        return {p.rsplit("/", 2)[-2]: pq.read_table(io.BytesIO(fs.cat_file(p))) for p in found}
    except (OSError, pa.ArrowException) as e:
        raise StorageError(f"cannot read evaluations under {output_url!r}: {e}") from e


def read_leaderboard_json(output_url: str, eval_id: str, *, storage_options: StorageOptions = None) -> Any:
    """The parsed ``leaderboard.json`` of one evaluation (``{"eval_id", "info", "rows"}``).

    Raises:
        OSError: the file cannot be read (e.g. ``FileNotFoundError``).
        ValueError: it is not JSON.
    """
    return json.loads(read_bytes(join_url(evaluation_url(output_url, eval_id), "leaderboard.json"), storage_options))
