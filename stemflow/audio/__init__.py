"""Audio files in and out: decoding to model-ready float32, encoding stems, one table of formats.

- ``formats``: the one table of extensions (decoder tried first, format written); standard library only;
- ``source``: a path / bytes / file object resolved to one checked, labelled decoder input;
- ``decode``: :func:`~stemflow.audio.decode.load_audio`, ``probe``, ``load_stems`` and the input policy;
- ``resample``: soxr rate conversion and the stereo layout;
- ``encode``: ``encode`` / ``save_audio``, the clipping policy and the one PCM quantiser;
- ``ffmpeg``: the ffmpeg/ffprobe subprocess back end for what libsndfile does not read or write.
"""
