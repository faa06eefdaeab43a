"""Prefect flows over the stemflow library: the only package that imports :mod:`prefect`.

- :mod:`pipelines.separate_catalogue`: the nightly job (plan, shard, separate on
  Ray, record, summarise) and the CLI backend (:func:`run_catalogue`,
  :func:`catalogue_status`).
- :mod:`pipelines.runtime`: the bodies of its tasks, without Prefect (model
  resolution, shard planning, one shard, recovery from markers, status).
- :mod:`pipelines.reprocess`: a newer model over what it has not yet committed,
  optionally only tracks whose previous quality metadata crossed a threshold.
- :mod:`pipelines.evaluate`: models against a data set with reference stems
  (metrics, leaderboard); the CLI's ``evaluate`` backend.
- :mod:`pipelines.karaoke`: a versioned karaoke data set from a catalogue or a
  separation output (separating what is missing first).
- :mod:`pipelines.demo`: a small demo catalogue run end to end on the offline model.

Environment variables are read here (never in ``stemflow/``): ``RAY_ADDRESS``
selects a Ray cluster (default: a local Ray started on demand), Prefect's own
``PREFECT_API_URL`` selects a Prefect server (default: the ephemeral API).
"""
