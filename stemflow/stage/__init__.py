"""The stage: separate a shard of tracks, exactly once, on a pool of model-holding workers.

- :mod:`stemflow.stage.settings`: stage settings, a shard's job, track outcomes and shard results;
- :mod:`stemflow.stage.fetching`: read and decode one source within the memory limits;
- :mod:`stemflow.stage.finishing`: encode, write the stems, commit the marker, the Parquet rows;
- :mod:`stemflow.stage.worker`: :class:`~stemflow.stage.worker.TrackWorker`, the three steps for one model, no Ray;
- :mod:`stemflow.stage.ray_adapter`: the worker as Ray Data actors (the only module importing Ray).
"""
