"""The stage: separate a catalogue run's tracks, exactly once, on one long-lived pool of model-holding workers.

- :mod:`stemflow.stage.settings`: stage settings, a run's job, track outcomes and results;
- :mod:`stemflow.stage.failures`: the ``error_type`` of a failure;
- :mod:`stemflow.stage.fetching`: read and decode one source within the memory limits;
- :mod:`stemflow.stage.finishing`: measure, encode, write the stems, commit the marker, the Parquet rows;
- :mod:`stemflow.stage.worker`: :class:`~stemflow.stage.worker.TrackWorker`, the steps for one model, no Ray;
- :mod:`stemflow.stage.pipeline`: one worker's batches with the steps overlapped (I/O, model, CPU threads);
- :mod:`stemflow.stage.scheduler`: the driver's side without Ray: feeding the pool, crashes, shards, stops;
- :mod:`stemflow.stage.progress`: done / planned, tracks per hour, ETA, errors by type;
- :mod:`stemflow.stage.output_sink`: journal, Parquet part and index delta of each shard;
- :mod:`stemflow.stage.recovery`: record what runs that did not finish committed, from their journals;
- :mod:`stemflow.stage.catalogue_run`: a whole run (recover, index, plan, separate, record) without Prefect;
- :mod:`stemflow.stage.ray_adapter`: the pool as Ray actors, and Ray Jobs submission (the only module importing Ray).
"""
