"""Measures of audio: what a stem sounds like alone, and how close it is to a reference.

- ``signals``: the shared input check (``[channels, samples]``, numpy or torch) and energy sums;
- ``loudness``: integrated loudness (LUFS) and true peak (dBTP) after ITU-R BS.1770-4;
- ``quality``: the reference-free quality columns the catalogue records per stem and per track;
- ``accumulators``, ``streaming``: the same columns from consecutive blocks of a track, in bounded memory;
- ``metrics``: measures against reference stems (cSDR, uSDR, SI-SDR, bleedless/fullness, L1Freq);
- ``metric_streams``: the same reference measures accumulated block by block (``stft_frames``: STFT frames over blocks).

Each measure is imported from the module that defines it; nothing is re-exported.
"""
