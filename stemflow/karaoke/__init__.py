"""Karaoke datasets: versioned backing tracks and guide vocals built from committed stems.

- ``scores``: reference-free karaoke scores of a vocal/backing pair and the accept/reject verdict;
- ``settings``: :class:`~stemflow.karaoke.settings.DatasetSettings`, presence and thresholds, ``configs/karaoke.yaml``;
- ``dataset``: building one dataset version (splits, version names, per-track files, completion marker);
- ``streamed``: the karaoke scores over blocks, the backing of stems, the streamed vocal model for the residue;
- ``track_build``: one track measured, gained and written in passes over its stems (bounded memory);
- ``index``: the dataset index (``manifest.parquet``, one row per track) and WebDataset shards;
- ``card``: the dataset card (``README.md``) with score distributions.

The Prefect flow that runs these steps as tasks is :mod:`pipelines.karaoke`.
"""
