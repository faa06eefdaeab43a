"""Reading a committed track's stems back, by what its marker says and nothing else.

Every reader of committed stems (the report, the karaoke datasets, the
evaluation of committed stems) goes through :func:`read_committed`, so each
gets the same checks before anything is read:

* the marker is well formed and names this model and track
  (:func:`stemflow.store.commit.read_marker`: stem and file names are plain safe
  components inside the track folder, never ``..``, ``/`` or another folder);
* each stem is read with a cap of the size the marker lists, and its bytes
  must have the marker's sha256 (a replaced or truncated stem is an error,
  never decoded as if it were the committed one).

:func:`committed_inputs` is the streamed counterpart: the same marker checks,
and each stem as an :class:`~stemflow.evaluation.inputs.AudioInput` carrying the
size and sha256 to check before it is decoded block by block
(:func:`stemflow.evaluation.inputs.open_inputs`), never read whole.

The mixture a marker names (``source_url``) is not read here; a caller that
wants it reads it with :func:`stemflow.store.sources.read_source`, under the
catalogue it expects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from stemflow.audio.decode import DecodedAudio, load_audio
from stemflow.errors import StorageError
from stemflow.evaluation.inputs import AudioInput
from stemflow.store.commit import CommitMarker, committed_stem_urls, read_marker
from stemflow.store.objects import read_bytes
from stemflow.store.paths import StorageOptions


@dataclass(frozen=True)
class CommittedTrack:
    """A committed track: its marker and its stems decoded at their stored rate, in the marker's order."""

    marker: CommitMarker
    stems: dict[str, DecodedAudio]


def read_committed(output_url: str, model_id: str, track_id: str, *,
                   storage_options: StorageOptions = None) -> CommittedTrack | None:
    """The committed stems of a track, verified against its marker; ``None`` when it is not committed.

    Raises:
        StorageError: the marker is malformed or names another track, or a stem is
            missing, larger than listed, or not the bytes the marker lists.
        AudioDecodeError: a stem cannot be decoded.
    """
    marker = read_marker(output_url, model_id, track_id, storage_options=storage_options)
    if marker is None:
        return None
    urls = committed_stem_urls(output_url, model_id, track_id, marker)
    stems = {}
    for stem in marker.stems:
        url = urls[stem.stem]
        try:
            data = read_bytes(url, storage_options, max_bytes=stem.size)
        except FileNotFoundError as e:
            raise StorageError(f"{url}: a committed stem is missing") from e
        if len(data) != stem.size or hashlib.sha256(data).hexdigest() != stem.sha256:
            raise StorageError(f"{url}: not the stem its marker lists ({len(data)} bytes, sha256 differs); not used")
        stems[stem.stem] = load_audio(data, sample_rate=None, name=f"{track_id}/{stem.file_name}")
    return CommittedTrack(marker, stems)


def committed_inputs(output_url: str, model_id: str, track_id: str, *,
                     storage_options: StorageOptions = None) -> tuple[CommitMarker, dict[str, AudioInput]] | None:
    """The marker and the stems of a committed track as inputs to stream (``None`` when it is not committed).

    The stems' bytes are checked against the marker when opened
    (:func:`stemflow.evaluation.inputs.open_inputs`), not here.

    Raises:
        StorageError: the marker is malformed or names another track.
    """
    marker = read_marker(output_url, model_id, track_id, storage_options=storage_options)
    if marker is None:
        return None
    urls = committed_stem_urls(output_url, model_id, track_id, marker)
    return marker, {stem.stem: AudioInput(urls[stem.stem], size=stem.size, sha256=stem.sha256,
                                          name=f"{track_id}/{stem.file_name}") for stem in marker.stems}
