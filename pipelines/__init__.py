"""Prefect flows over the stemflow library: the only package that imports :mod:`prefect`.

- :mod:`pipelines.separate_catalogue`: the nightly job and the CLI backend
  (:func:`run_catalogue`, :func:`dry_run`, :func:`catalogue_status`).
- :mod:`pipelines.run_body`: the body every separation flow shares (start the
  run, execute it with :mod:`stemflow.stage.catalogue_run`, progress, summary,
  graceful stop on SIGTERM/SIGINT).
- :mod:`pipelines.parameters`: the typed ``stage`` and ``model_settings`` flow parameters.
- :mod:`pipelines.runtime`: model resolution, versions and ``status``, without Prefect.
- :mod:`pipelines.submit`: a run submitted to a Ray cluster through the Ray Jobs
  API and followed from Prefect (the Kubernetes deployment).
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
