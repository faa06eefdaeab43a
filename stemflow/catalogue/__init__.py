"""The catalogue: which source tracks exist, their stable ids, and what is left to do for a model.

Everything here streams (generators, bounded look-ahead), so memory does not
grow with the catalogue. It builds on :mod:`stemflow.store` and the format table
:mod:`stemflow.audio.formats` only (no torch, soundfile, Ray or Prefect).

- ``tracks``: :class:`TrackRef` and the stable ``track_id`` of an audio object.
- ``listing``: walk a folder or prefix, folder by folder, yielding the audio objects.
- ``local_walk``: the rules for local folders: regular files only, links once per real path, real-path exclusions.
- ``manifests``: read a CSV or Parquet catalogue manifest in row batches.
- ``planning``: drop what is committed for a ``model_id`` and group the rest into shards.
"""
