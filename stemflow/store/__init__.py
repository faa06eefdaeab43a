"""The output store: every read and write of ``<out>/`` goes through this package.

It implements the storage contract of DESIGN.md (stems, commit markers, Parquet
records, run manifests) on any fsspec URL, with fsspec and pyarrow only (no
torch, soundfile, Ray or Prefect).

- ``paths``: URL to filesystem, normalised URLs, safe key components and joins.
- ``objects``: reads and atomic / create-only writes of objects, stat, sha256.
- ``retry``: bounded retries with full-jitter backoff for transient remote errors.
- ``calls``: one bounded call to a filesystem (retries, overall deadline, regular local files only).
- ``streams``: streamed reads (block by block, one deadline) and atomic streamed writes.
- ``marker``: the ``_COMMITTED.json`` format, read back strictly.
- ``commit``: exactly-once stems: write-once stem objects and ``_COMMITTED.json`` markers.
- ``redact``: secrets masked out of settings before they are written anywhere.
- ``sources``: reading a URL that stored data names only under the roots the caller expects.
- ``records``: the quality records (Parquet schema, rows, parts); ``record_scan``: reading them
  back part by part, column-projected, foreign files quarantined.
- ``runs``: the run manifest ``runs/<run_id>.json``; ``journal``: a run's intent journal.
- ``index``: the committed index of a model (sorted 80-bit keys) that planning anti-joins with.
- ``quarantine``: what a run could not read in its output, counted and reported.
- ``lookahead``: a streaming, order-keeping thread-pool map for I/O-bound items.
"""
