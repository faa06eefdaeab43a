"""Evaluation against reference stems, and the visual report of an output folder.

- ``references``: data sets with references (MUSDB18 folders, ``.stem.mp4``), decoding, what a stem is scored on;
- ``scoring``: the metrics rows of one model on one track (``metrics.parquet``) and the mixture baseline;
- ``streamed``: the same rows computed block by block from the objects (bounded memory; what the flow runs);
- ``inputs``: audio objects (references, committed stems) opened for streaming, verified, read in lockstep;
- ``leaderboard``: the model x stem summary (cSDR median, uSDR mean, …) as a table and as Markdown;
- ``committed``: a committed track's stems, found and verified through its marker only;
- ``results``: writing and reading ``<out>/evaluation/<eval_id>/``;
- ``flags``: thresholds on the quality columns and the stems they flag;
- ``report``: the HTML report of an output (records and evaluations);
- ``page``: the report's HTML building blocks (template, tables, figures, players);
- ``plots``: the report's PNG plots (histograms, box plots, spectrogram strips).

The Prefect flow that runs an evaluation is :mod:`pipelines.evaluate`.
"""
