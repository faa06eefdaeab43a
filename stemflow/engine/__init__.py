"""The separation engine: a model over whole tracks by chunked overlap-add, in bounded memory.

- ``chunking``: the chunk plan (offsets, padding, fade windows) as pure functions;
- ``overlap_add``: track sources and the CPU accumulator that sums windowed chunk outputs;
- ``separator``: :class:`~stemflow.engine.separator.Separator`, batching chunks of one or many tracks through the model;
- ``streaming``: ``separate_file``, file to stem files without holding the track in memory;
- ``track``: ``separate_track``, decode + separate + measure, the one path the CLI and the Ray stage share.
"""
