"""Why a track failed, as a class an operator can count: the ``error_type`` of its error row.

Every failure the stage turns into an error row goes through
:func:`error_type_of`, which looks at the step where it happened and the
exception. The values and their meanings are
:data:`stemflow.store.records.ERROR_TYPES`; the run summary, the run manifest
and ``stemflow status --json`` count error rows by them.
"""

from __future__ import annotations

from stemflow.errors import AudioDecodeError, StorageError

STEPS: tuple[str, ...] = ("source", "marker", "fetch", "separate", "measure", "finish")
"""Where in a track's life a failure can happen, in order."""


class SourceLimitError(AudioDecodeError):
    """A source is over ``max_source_bytes`` or ``max_duration_s`` (refused before reading or decoding)."""


class CorruptMarkerError(StorageError):
    """A track's ``_COMMITTED.json`` exists but is not a readable stemflow marker."""


def error_type_of(step: str, error: BaseException) -> str:
    """The ``error_type`` of ``error`` raised in ``step`` (one of :data:`STEPS`)."""
    if isinstance(error, SourceLimitError):
        return "limit"
    if isinstance(error, CorruptMarkerError):
        return "marker"
    if step == "source" or (step == "fetch" and isinstance(error, FileNotFoundError)):
        return "source"
    if isinstance(error, AudioDecodeError):
        return "decode"
    if isinstance(error, (StorageError, OSError)):
        return "storage"
    if step == "separate":
        return "model"
    if step == "fetch":
        return "decode"
    return "internal"  # encoding, measuring, or a bug
