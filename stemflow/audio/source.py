"""What the decoder reads from: a local path, bytes, or a binary file object, checked and labelled.

The pipeline hands the decoder whatever fsspec gives it (bytes or an open
file), the CLI hands it local paths. :func:`resolve_source` turns any of them
into one :class:`ResolvedSource`: either a local path or the bytes in memory,
with the label that error messages show and the lower-case extension that
:mod:`stemflow.audio.formats` maps to a decoder. A missing file, an unreadable
file object or a zero-byte input raises
:class:`~stemflow.errors.AudioDecodeError` here, before any decoder runs.

ffmpeg reads files, not memory: :func:`local_path` gives a path for either
kind, writing bytes to a temporary file only when they have no path (named by
:mod:`stemflow.tempfiles`, so a killed process's copy is swept later).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from stemflow.audio.formats import DECODABLE_EXTENSIONS, file_suffix
from stemflow.errors import AudioDecodeError
from stemflow.tempfiles import temp_dir

AudioSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
"""What the decoder accepts: a local path, the file's bytes, or a binary file object."""


@dataclass(frozen=True)
class ResolvedSource:
    """A decoder input: exactly one of ``path`` (a local file) and ``data`` (its bytes) is set.

    ``label`` names the input in error messages; ``suffix`` is its lower-case
    extension with the dot (``""`` if none).
    """

    label: str
    path: Path | None
    data: bytes | None
    suffix: str

    def soundfile_input(self) -> Path | io.BytesIO:
        """What :mod:`soundfile` opens: the path, or a fresh in-memory stream over the bytes."""
        return self.path if self.path is not None else io.BytesIO(self.data or b"")

    def head(self, size: int) -> bytes:
        """The first ``size`` bytes of the input."""
        if self.data is not None:
            return self.data[:size]
        with open(self.path, "rb") as handle:  # type: ignore[arg-type]
            return handle.read(size)


def resolve_source(source: AudioSource, name: str | None) -> ResolvedSource:
    """Normalise a path / bytes / file object; raise on missing or zero-byte input.

    ``name`` replaces the path (or the file object's ``name``) in messages.
    File objects are read to the end; paths are only checked (size), not read.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data: bytes | None = bytes(source)
        label = name or "<bytes>"
        path = None
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or str(path)
        _check_file_size(path, label)
        data = None
    elif hasattr(source, "read"):
        label = name or str(getattr(source, "name", "<file object>"))
        data = _read_file_object(source, label)
        path = None
    else:
        raise TypeError(f"expected a path, bytes or a binary file object, got {type(source).__name__}")
    if data is not None and len(data) == 0:
        raise AudioDecodeError(f"{label}: the input is empty (0 bytes)")
    suffix = file_suffix(path.name if path is not None else label)
    return ResolvedSource(label=label, path=path, data=data, suffix=suffix)


def _check_file_size(path: Path, label: str) -> None:
    """Raise :class:`AudioDecodeError` if ``path`` cannot be stat'ed or holds zero bytes."""
    try:
        size = path.stat().st_size
    except OSError as e:
        raise AudioDecodeError(f"{label}: cannot read the file: {e.strerror or e}") from e
    if size == 0:
        raise AudioDecodeError(f"{label}: the file is empty (0 bytes)")


def _read_file_object(source: BinaryIO, label: str) -> bytes:
    """Everything left in a binary file object; text-mode objects are a :class:`TypeError`."""
    try:
        data = source.read()
    except OSError as e:
        raise AudioDecodeError(f"{label}: cannot read the file object: {e}") from e
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"{label}: the file object must be opened in binary mode")
    return bytes(data)


@contextmanager
def local_path(source: ResolvedSource) -> Iterator[Path]:
    """A local path holding the source's bytes (a temporary file for bytes inputs, removed afterwards).

    The temporary file keeps the input's extension when it is an audio one, so
    tools that look at names (ffprobe's format guess) see the same name a path would have.
    """
    if source.path is not None:
        yield source.path
        return
    with temp_dir("audio") as folder:
        temp_path = folder / f"input{source.suffix if source.suffix in DECODABLE_EXTENSIONS else ''}"
        temp_path.write_bytes(source.data or b"")
        yield temp_path
