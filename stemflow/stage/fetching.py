"""Fetching one source for the stage: read the object and decode it, within the memory limits.

:func:`fetch_source` runs on an actor's I/O threads, so the next tracks are
read and decoded while the model separates the current one. It never raises:
a failure travels as the :class:`FetchedSource`'s ``error`` and ends as the
track's error row.

Memory per track is bounded before anything big is read: a source larger than
``max_source_bytes`` (one HEAD) is refused unread, and one whose header claims
more than ``max_duration_s`` is refused undecoded; both errors name the limit.
The decoder then checks ``max_decoded_bytes`` (``seconds x rate x channels x 4``)
and ``max_duration_s`` again, before decoding where the header states the
length and block by block while decoding whether or not it does
(:mod:`stemflow.audio.blocks`), so a header that lies or tells nothing stops
the decode at the limit. ``None`` disables a limit.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stemflow.audio.blocks import DEFAULT_MAX_DECODED_BYTES, DecodeLimits
from stemflow.audio.decode import DecodedAudio, probe
from stemflow.engine.separator import Separator
from stemflow.engine.track import decode_track
from stemflow.errors import StemflowError
from stemflow.stage.failures import SourceLimitError
from stemflow.store.objects import object_info, read_bytes
from stemflow.store.retry import RetryPolicy


@dataclass(frozen=True)
class SourceLimits:
    """The largest source the stage reads (bytes) and decodes (seconds); ``None``: no limit."""

    max_duration_s: float | None
    max_source_bytes: int | None
    max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES

    def decode_limits(self) -> DecodeLimits:
        """The limits the decoder checks before and while decoding (bytes and seconds)."""
        return DecodeLimits(max_decoded_bytes=self.max_decoded_bytes, max_duration_s=self.max_duration_s)


@dataclass(frozen=True)
class FetchedSource:
    """A source read and decoded at the model's rate, or the error that stopped it.

    ``seconds``: time spent fetching (read + decode); ``decode_s``: of which decoding.
    """

    decoded: DecodedAudio | None
    error: BaseException | None
    seconds: float
    decode_s: float = 0.0


def fetch_source(
    url: str,
    separator: Separator,
    limits: SourceLimits,
    *,
    storage_options: Mapping[str, Any],
    retry: RetryPolicy | None,
) -> FetchedSource:
    """Read and decode ``url`` for ``separator`` within ``limits`` (never raises)."""
    started = time.perf_counter()
    try:
        check_source_size(url, limits.max_source_bytes, storage_options=storage_options, retry=retry)
        data = read_bytes(url, storage_options, retry=retry)
        check_duration(data, url, limits.max_duration_s)
        decode_started = time.perf_counter()
        decoded = decode_track(separator, data, name=url, limits=limits.decode_limits())
        separator.check_audio(decoded.samples, decoded.sample_rate)
    except Exception as e:  # noqa: BLE001 - becomes this track's error row
        return FetchedSource(None, e, time.perf_counter() - started)
    done = time.perf_counter()
    return FetchedSource(decoded, None, done - started, decode_s=done - decode_started)


def check_source_size(url: str, max_source_bytes: int | None, *, storage_options: Mapping[str, Any],
                      retry: RetryPolicy | None) -> None:
    """Refuse, unread, a source object larger than ``max_source_bytes`` (one HEAD; ``None``: no check).

    Raises:
        SourceLimitError: the object is over the limit (an ``AudioDecodeError``).
    """
    if max_source_bytes is None:
        return
    size = object_info(url, storage_options, retry=retry).size
    if size > max_source_bytes:
        raise SourceLimitError(
            f"{url}: the source is {size} bytes, over max_source_bytes={max_source_bytes}; "
            "not read (raise the limit in the stage settings to process it)")


def check_duration(data: bytes, url: str, max_duration_s: float | None) -> None:
    """Refuse a source whose header claims more than ``max_duration_s`` (before decoding it).

    An undecodable header passes: the decoder then raises its own clear error.

    Raises:
        SourceLimitError: the source is over the limit (an ``AudioDecodeError``).
    """
    if max_duration_s is None or not data:
        return
    try:
        duration_s = probe(data, name=url).duration_s
    except StemflowError:
        return
    if duration_s is not None and duration_s > max_duration_s:
        raise SourceLimitError(
            f"{url}: the source is {duration_s:.0f} s long, over max_duration_s={max_duration_s:g}; "
            "not decoded (raise the limit in the stage settings to process it)")
