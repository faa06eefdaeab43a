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

**Long tracks stream.** A source whose object is larger than
``stream_above_bytes``, or whose decoded size at the model's rate (stereo
float32, from the header) is, or whose header does not tell its length, is not
decoded into memory: it is copied to a local file (streamed, the object never
in memory; a local source is read in place), opened for block-by-block decoding
(:func:`stemflow.audio.decode.open_track`, which knows the exact length before
the first block, counting it where the header does not) and handed on as a
:class:`stemflow.stage.streamed.StreamedSource` that the model step separates
block by block. ``None`` keeps every track in memory.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from stemflow.audio.blocks import DEFAULT_MAX_DECODED_BYTES, DecodeLimits
from stemflow.audio.decode import AudioInfo, DecodedAudio, open_track, probe
from stemflow.engine.separator import Separator
from stemflow.engine.track import decode_track
from stemflow.errors import StemflowError
from stemflow.stage.failures import SourceLimitError
from stemflow.stage.settings import DEFAULT_STREAM_ABOVE_BYTES
from stemflow.stage.streamed import StreamedSource
from stemflow.store.objects import object_info, read_bytes
from stemflow.store.paths import filesystem, is_local_fs
from stemflow.store.retry import RetryPolicy
from stemflow.store.streams import local_copy
from stemflow.tempfiles import temp_file


@dataclass(frozen=True)
class SourceLimits:
    """The largest source the stage reads (bytes) and decodes (seconds); ``None``: no limit."""

    max_duration_s: float | None
    max_source_bytes: int | None
    max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES
    stream_above_bytes: int | None = DEFAULT_STREAM_ABOVE_BYTES

    def decode_limits(self) -> DecodeLimits:
        """The limits the decoder checks before and while decoding (bytes and seconds)."""
        return DecodeLimits(max_decoded_bytes=self.max_decoded_bytes, max_duration_s=self.max_duration_s)


@dataclass(frozen=True)
class FetchedSource:
    """A source read and decoded at the model's rate, or opened to stream (``streamed``), or the error that stopped it.

    ``seconds``: time spent fetching (read + decode); ``decode_s``: of which decoding.
    """

    decoded: DecodedAudio | None
    error: BaseException | None
    seconds: float
    decode_s: float = 0.0
    streamed: StreamedSource | None = None


def fetch_source(
    url: str,
    separator: Separator,
    limits: SourceLimits,
    *,
    storage_options: Mapping[str, Any],
    retry: RetryPolicy | None,
) -> FetchedSource:
    """Read and decode ``url`` for ``separator`` within ``limits``, or open it to stream (never raises)."""
    started = time.perf_counter()
    stack = contextlib.ExitStack()
    try:
        size = check_source_size(url, limits.max_source_bytes, storage_options=storage_options, retry=retry)
        threshold = limits.stream_above_bytes
        if size is None and threshold is not None:
            size = object_info(url, storage_options, retry=retry).size
        if threshold is not None and size is not None and size > threshold:
            path = stack.enter_context(local_copy(url, storage_options, retry=retry, max_bytes=limits.max_source_bytes,
                                                  suffix=_suffix(url)))
            return _streamed(path, url, separator, limits, stack, started)
        data = read_bytes(url, storage_options, retry=retry)
        info = check_duration(data, url, limits.max_duration_s)
        if threshold is not None and _streams(info, separator.sample_rate, threshold):
            # a local source is read in place; a remote one is spooled from the bytes read (no second GET), which
            # are then dropped: nothing of the source stays in memory while it streams
            local = is_local_fs(filesystem(url, storage_options)[0])
            spool = (local_copy(url, storage_options, retry=retry, max_bytes=limits.max_source_bytes) if local
                     else _spooled(data, _suffix(url)))
            del data
            path = stack.enter_context(spool)
            return _streamed(path, url, separator, limits, stack, started)
        decode_started = time.perf_counter()
        decoded = decode_track(separator, data, name=url, limits=limits.decode_limits())
        separator.check_audio(decoded.samples, decoded.sample_rate)
    except Exception as e:  # noqa: BLE001 - becomes this track's error row
        stack.close()
        return FetchedSource(None, e, time.perf_counter() - started)
    done = time.perf_counter()
    return FetchedSource(decoded, None, done - started, decode_s=done - decode_started)


def _streams(info: AudioInfo | None, model_rate: int, threshold: int) -> bool:
    """Whether a source of ``info`` streams: its header gives no length, or it decodes to more than ``threshold``."""
    if info is None:
        return False  # not readable as audio: decoding in memory says why
    if info.frames is None:
        return True
    return info.frames * model_rate / max(info.sample_rate, 1) * 2 * 4 > threshold


def _streamed(path: str, url: str, separator: Separator, limits: SourceLimits, stack: contextlib.ExitStack,
              started: float) -> FetchedSource:
    """Open the local file ``path`` (held by ``stack``) for streaming at the model's rate."""
    decode_started = time.perf_counter()
    track = stack.enter_context(open_track(path, sample_rate=separator.sample_rate, channels=2, name=url,
                                           limits=limits.decode_limits()))
    done = time.perf_counter()
    return FetchedSource(None, None, done - started, decode_s=done - decode_started,
                         streamed=StreamedSource(track, stack, url))


_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


def _suffix(url: str) -> str:
    """The extension of ``url``'s last component when it is a plain one (decoders go by it), else ``""``."""
    suffix = os.path.splitext(url.rstrip("/").rsplit("/", 1)[-1])[1]
    return suffix.lower() if _SUFFIX.match(suffix) else ""


def _spooled(data: bytes, suffix: str) -> contextlib.AbstractContextManager[str]:
    """``data`` in a temporary file of this process (swept after a kill), removed afterwards.

    The file is written here, so the context holds its path, not ``data``: once
    the caller drops its own reference the bytes are freed while the file is read
    (a ``@contextmanager`` generator keeps its arguments for the whole block).
    """
    stack = contextlib.ExitStack()
    try:
        descriptor, path = stack.enter_context(temp_file("source", suffix))
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
    except BaseException:
        stack.close()
        raise
    return _holding(stack, str(path))


@contextlib.contextmanager
def _holding(stack: contextlib.ExitStack, path: str) -> Iterator[str]:
    """``path`` until the block ends, then ``stack`` closed (the file removed)."""
    with stack:
        yield path


def check_source_size(url: str, max_source_bytes: int | None, *, storage_options: Mapping[str, Any],
                      retry: RetryPolicy | None) -> int | None:
    """Refuse, unread, a source object larger than ``max_source_bytes`` (one HEAD; ``None``: no check).

    Returns the object's size (``None`` when there is no limit to check: no HEAD).

    Raises:
        SourceLimitError: the object is over the limit (an ``AudioDecodeError``).
    """
    if max_source_bytes is None:
        return None
    size = object_info(url, storage_options, retry=retry).size
    if size > max_source_bytes:
        raise SourceLimitError(
            f"{url}: the source is {size} bytes, over max_source_bytes={max_source_bytes}; "
            "not read (raise the limit in the stage settings to process it)")
    return size


def check_duration(data: bytes, url: str, max_duration_s: float | None) -> AudioInfo | None:
    """Refuse a source whose header claims more than ``max_duration_s`` (before decoding it); its header.

    An undecodable header passes (``None``): the decoder then raises its own clear error.

    Raises:
        SourceLimitError: the source is over the limit (an ``AudioDecodeError``).
    """
    if not data:
        return None
    try:
        info = probe(data, name=url)
    except StemflowError:
        return None
    duration_s = info.duration_s
    if max_duration_s is not None and duration_s is not None and duration_s > max_duration_s:
        raise SourceLimitError(
            f"{url}: the source is {duration_s:.0f} s long, over max_duration_s={max_duration_s:g}; "
            "not decoded (raise the limit in the stage settings to process it)")
    return info
