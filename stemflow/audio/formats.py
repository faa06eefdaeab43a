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

AudioFormat = Literal["flac", "wav", "aiff", "mp3", "ogg", "opus", "m4a"]
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
    ".opus": Extension("soundfile", "opus"),
    ".mp3": Extension("soundfile", "mp3"),
    ".m4a": Extension("ffmpeg", "m4a"),
    ".mp4": Extension("ffmpeg"),
    ".aac": Extension("ffmpeg"),
    ".m4b": Extension("ffmpeg"),
    ".alac": Extension("ffmpeg"),
    ".wma": Extension("ffmpeg"),
    ".webm": Extension("ffmpeg"),
    ".mka": Extension("ffmpeg"),
}
"""Lower-case extension (with the dot) -> how it is read and written."""

@dataclass(frozen=True)
class LossyCodec:
    """How a lossy format is written with ffmpeg: codec, container, bitrates and sample rates.

    ``default_kbps`` is used when no bitrate is asked; ``kbps_range`` bounds what
    may be asked. ``sample_rates`` are the rates the codec takes (``None``: any);
    ``resample_to``, when set, is the rate every input is converted to first (Opus
    always runs at 48 kHz). ``libsndfile_subtype``: the libsndfile subtype that
    writes the format at libsndfile's default quality, used instead of ffmpeg
    when no bitrate is asked and libsndfile has the format.
    """

    ffmpeg_codec: str
    container: str
    default_kbps: int
    kbps_range: tuple[int, int]
    sample_rates: tuple[int, ...] | None = None
    resample_to: int | None = None
    libsndfile_subtype: str | None = None


LOSSY_CODECS: dict[str, LossyCodec] = {
    "mp3": LossyCodec("libmp3lame", "mp3", 320, (32, 320), (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100,
                                                            48000), libsndfile_subtype="MPEG_LAYER_III"),
    "ogg": LossyCodec("libvorbis", "ogg", 192, (48, 480), libsndfile_subtype="VORBIS"),
    "opus": LossyCodec("libopus", "opus", 160, (16, 510), (48000,), resample_to=48000),
    "m4a": LossyCodec("aac", "ipod", 256, (32, 512),
                      (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)),
}
"""The lossy formats (MP3, Ogg Vorbis, Opus in Ogg, AAC in MP4/M4A) and how they are encoded."""

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
