"""The one table of audio file formats: which extensions stemflow reads, with what, and writes.

Every place that needs to know about audio file names asks here: the decoder
(:mod:`stemflow.audio.decode`) picks libsndfile or ffmpeg by extension, the
catalogue (:mod:`stemflow.catalogue.listing`) lists exactly the files the
decoder reads, the CLI takes the same files from folders, and
:func:`stemflow.audio.encode.save_audio` infers the output format from a path.

libsndfile recognises a file by its content, so for the ``soundfile`` rows a
wrong extension is harmless; the extension only decides whether we *try*
libsndfile first. MP4-family containers (and the multi-stream ``.stem.mp4`` of
MUSDB18 / Native Instruments) go straight to ffmpeg.

This module imports nothing but the standard library, so the storage and
catalogue layers can use it without pulling in soundfile or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

AudioFormat = Literal["flac", "wav", "aiff", "mp3", "ogg"]
"""Formats :func:`stemflow.audio.encode.encode` writes."""

Decoder = Literal["soundfile", "ffmpeg"]


@dataclass(frozen=True)
class Extension:
    """One file extension: the decoder tried first, and the format written for it (``None``: not written)."""

    decoder: Decoder
    encode_as: AudioFormat | None = None


EXTENSIONS: dict[str, Extension] = {
    ".wav": Extension("soundfile", "wav"),
    ".wave": Extension("soundfile", "wav"),
    ".flac": Extension("soundfile", "flac"),
    ".aiff": Extension("soundfile", "aiff"),
    ".aif": Extension("soundfile", "aiff"),
    ".aifc": Extension("soundfile"),
    ".ogg": Extension("soundfile", "ogg"),
    ".oga": Extension("soundfile", "ogg"),
    ".opus": Extension("soundfile"),
    ".mp3": Extension("soundfile", "mp3"),
    ".m4a": Extension("ffmpeg"),
    ".mp4": Extension("ffmpeg"),
    ".aac": Extension("ffmpeg"),
    ".m4b": Extension("ffmpeg"),
    ".alac": Extension("ffmpeg"),
    ".wma": Extension("ffmpeg"),
    ".webm": Extension("ffmpeg"),
    ".mka": Extension("ffmpeg"),
}
"""Lower-case extension (with the dot) -> how it is read and written."""

STEM_MP4_SUFFIX = ".stem.mp4"
"""A multi-stream stems file (stream 0 = the mixture); one track, read with ffmpeg."""

DECODABLE_EXTENSIONS: frozenset[str] = frozenset(EXTENSIONS)
"""Every extension :func:`stemflow.audio.decode.load_audio` reads (lower-case, with the dot)."""

FFMPEG_EXTENSIONS: frozenset[str] = frozenset(e for e, x in EXTENSIONS.items() if x.decoder == "ffmpeg")
"""Extensions decoded with ffmpeg without trying libsndfile first."""


def file_suffix(name: str) -> str:
    """The lower-case last extension of a file name or URL, with the dot (``""`` if none)."""
    return PurePosixPath(name.rsplit("/", 1)[-1]).suffix.lower()


def audio_suffix(name: str) -> str | None:
    """The audio extension of a file name (``".stem.mp4"`` for stems files), ``None`` if not audio."""
    lower = name.rsplit("/", 1)[-1].lower()
    if lower.endswith(STEM_MP4_SUFFIX):
        return STEM_MP4_SUFFIX
    suffix = file_suffix(lower)
    return suffix if suffix in EXTENSIONS else None


def format_for_path(name: str, default: AudioFormat = "flac") -> AudioFormat:
    """The format :func:`stemflow.audio.encode.save_audio` writes for a path (``default`` if unknown)."""
    extension = EXTENSIONS.get(file_suffix(name))
    return extension.encode_as if extension is not None and extension.encode_as is not None else default
