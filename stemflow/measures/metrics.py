"""Reference-based separation metrics: cSDR (MUSDB18/museval), uSDR (SDX), SI-SDR, spectral scores.

Every function takes ``[channels, samples]`` arrays (numpy or torch; computed in
float64 with numpy, inputs never modified) and returns plain floats or numpy
arrays. Shapes of reference and estimate must be equal (no silent padding or
truncation: museval pads/truncates the estimate, we raise ``ValueError``).

Which SDR?
    * **cSDR** (:func:`csdr`): what MUSDB18 papers report -- BSS-Eval v4
      (museval, ``bss_eval`` images with time-invariant 512-tap distortion
      filters) on 1 s frames, median over frames, then median over tracks
      (:func:`csdr_over_tracks`).
    * **uSDR** (:func:`sdr`): what the Sound Demixing Challenges (MDX 2021, SDX
      2023) and Music-Source-Separation-Training report -- one ratio over the
      whole track, averaged over tracks by the caller.

Why framewise SDR needs no projection: in museval's images mode the estimate
is decomposed as ``s_hat = s_true + e_spat + e_interf + e_artif`` (e_artif is
defined as the remainder), and SDR = 10 log10(||s_true||^2 / ||e_spat +
e_interf + e_artif||^2) = 10 log10(||s||^2 / ||s_hat - s||^2) on each frame: the
distortion filters (``_project`` onto delayed references, Toeplitz solves) only
split the error into ISR/SIR/SAR and cancel out of SDR. So SDR per stem does
not depend on the other stems' references, and reduces to a framewise
energy ratio; we check this against museval on MUSDB18 audio (agreement
< 1e-6 dB, see ``tests/test_metrics_museval.py``). What *is* joint in museval is
the silence rule: a frame is NaN for every stem when any stem's reference or
estimate is silent in it (:func:`framewise_sdr_joint` reproduces that).

ISR, SIR and SAR are not provided (they do need the projections).
The reference-free measures live in :mod:`stemflow.measures.quality`, loudness and
true peak in :mod:`stemflow.measures.loudness`; nothing of theirs is re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from stemflow.measures.signals import as_signal
from stemflow.models.mel_bands import mel_filterbank


#: eps of the MDX 2021 / SDX 2023 challenge SDR (Music-Source-Separation-Training uses 1e-8).
USDR_EPS = 1e-7


#: Frames processed together in :func:`framewise_sdr` (bounds the float64 copy).
_FRAMES_PER_BLOCK = 64


def _pair(reference: Any, estimate: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a reference/estimate pair of equal ``[channels, samples]`` shape."""
    ref = as_signal(reference, "reference")
    est = as_signal(estimate, "estimate")
    if ref.shape != est.shape:
        raise ValueError(f"reference {ref.shape} and estimate {est.shape} must have the same shape")
    return ref, est


def frame_count(n_samples: int, window: int, hop: int) -> int:
    """Number of frames museval's ``Framing`` yields: only whole windows; one frame if the signal is shorter."""
    if window >= n_samples:
        return 1
    return (n_samples - window + hop) // hop


def _frame_energies(ref: np.ndarray, est: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, ...]:
    """Per-frame ``(||s||^2, ||s_hat - s||^2, ||s_hat||^2)`` summed over channels, each shape ``[frames]``.

    Frame ``t`` covers samples ``[t*hop, min(t*hop + window, n))`` (museval's framing).
    """
    n = ref.shape[1]
    count = frame_count(n, window, hop)
    if count == 1 and window >= n:
        window = n
    ref_frames = np.lib.stride_tricks.sliding_window_view(ref, window, axis=1)[:, ::hop][:, :count]
    est_frames = np.lib.stride_tricks.sliding_window_view(est, window, axis=1)[:, ::hop][:, :count]
    out = np.empty((3, count))
    for start in range(0, count, _FRAMES_PER_BLOCK):
        sl = slice(start, start + _FRAMES_PER_BLOCK)
        r = ref_frames[:, sl].astype(np.float64)  # [channels, frames, window]
        e = est_frames[:, sl].astype(np.float64)
        out[0, sl] = np.einsum("cfw,cfw->f", r, r)
        out[2, sl] = np.einsum("cfw,cfw->f", e, e)
        e -= r
        out[1, sl] = np.einsum("cfw,cfw->f", e, e)
    return out[0], out[1], out[2]


def _samples(seconds: float, sample_rate: float, what: str) -> int:
    count = int(round(seconds * sample_rate))
    if count <= 0:
        raise ValueError(f"{what} of {seconds} s at {sample_rate} Hz is less than one sample")
    return count


def framewise_sdr(
    reference: Any, estimate: Any, sample_rate: float, window_s: float = 1.0, hop_s: float | None = None
) -> np.ndarray:
    """BSS-Eval v4 SDR of each frame, in dB, shape ``[frames]`` (museval ``bss_eval`` images SDR).

    ``SDR_t = 10 log10( sum_{c, n in t} s[c,n]^2 / sum_{c, n in t} (s_hat[c,n] - s[c,n])^2 )``
    over all channels of frame ``t`` (see the module docstring for why this is
    exactly museval's SDR with ``filters_len=512``, time-invariant filters).
    Frames are ``window_s`` long every ``hop_s`` (default: ``window_s``); only
    whole frames count, except that a signal shorter than one window is one frame
    (museval's ``Framing``).

    Silence, as in museval: a frame where the reference **or the estimate** is
    digital silence (all samples exactly 0) is **NaN**. (museval's test is
    "the channel sum is 0 at every sample", which also flags exactly anti-phase
    stereo; ours flags only true silence.) No epsilon: a frame with zero error
    is ``+inf`` (museval's ``_safe_db``).

    Args:
        reference, estimate: ``[channels, samples]`` audio of equal shape.
        sample_rate: in Hz; window and hop are rounded to whole samples.
    """
    ref, est = _pair(reference, estimate)
    window = _samples(window_s, sample_rate, "window_s")
    hop = window if hop_s is None else _samples(hop_s, sample_rate, "hop_s")
    ref_energy, err_energy, est_energy = _frame_energies(ref, est, window, hop)
    return _ratio_db(ref_energy, err_energy, (ref_energy == 0) | (est_energy == 0))


def _ratio_db(num: np.ndarray, den: np.ndarray, undefined: np.ndarray) -> np.ndarray:
    """``10 log10(num / den)`` with ``+inf`` for ``den == 0`` and NaN where ``undefined``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10.0 * np.log10(num / den)
    out[den == 0] = np.inf
    out[undefined] = np.nan
    return out


def framewise_sdr_joint(
    references: Any, estimates: Any, sample_rate: float, window_s: float = 1.0, hop_s: float | None = None
) -> np.ndarray:
    """Framewise SDR of several stems evaluated together, as ``museval.eval_mus_track`` does.

    Same ratio as :func:`framewise_sdr` per stem; the difference is museval's
    joint silence rule: frame ``t`` is NaN for **every** stem when any stem's
    reference or estimate is silent in it. Use this to reproduce published
    MUSDB18 numbers (vocals/drums/bass/other evaluated together).

    Args:
        references, estimates: ``[stems, channels, samples]`` (numpy or torch), equal shapes.

    Returns:
        ``[stems, frames]`` SDR in dB.
    """
    refs = [as_signal(r, f"references[{i}]") for i, r in enumerate(_stems(references, "references"))]
    ests = [as_signal(e, f"estimates[{i}]") for i, e in enumerate(_stems(estimates, "estimates"))]
    if len(refs) != len(ests) or any(r.shape != e.shape for r, e in zip(refs, ests)):
        raise ValueError("references and estimates must be [stems, channels, samples] arrays of equal shape")
    window = _samples(window_s, sample_rate, "window_s")
    hop = window if hop_s is None else _samples(hop_s, sample_rate, "hop_s")
    energies = np.stack([np.stack(_frame_energies(r, e, window, hop)) for r, e in zip(refs, ests)])
    silent = ((energies[:, 0] == 0) | (energies[:, 2] == 0)).any(axis=0)  # [frames]
    return _ratio_db(energies[:, 0], energies[:, 1], np.broadcast_to(silent, energies[:, 0].shape))


def _stems(x: Any, name: str) -> list[Any]:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be shaped [stems, channels, samples], got {arr.shape}")
    return list(arr)


def _nanmedian(values: np.ndarray) -> float:
    """Median ignoring NaN; NaN (and no warning) when nothing is left."""
    finite_or_inf = values[~np.isnan(values)]
    return float(np.median(finite_or_inf)) if finite_or_inf.size else float("nan")


def csdr(reference: Any, estimate: Any, sample_rate: float, window_s: float = 1.0) -> float:
    """Per-track cSDR in dB: median over non-silent 1 s frames of :func:`framewise_sdr`.

    This is the per-track number of MUSDB18 / SiSEC 2018 tables (museval
    ``TrackStore`` with ``frames_agg="median"`` = ``np.nanmedian``). NaN when every
    frame is silent; ``+inf`` when most frames are exact copies (as museval).
    Per-stem silence only; for museval's joint rule (what published MUSDB18
    numbers use) take ``np.nanmedian`` over :func:`framewise_sdr_joint`.
    """
    return _nanmedian(framewise_sdr(reference, estimate, sample_rate, window_s))


def csdr_over_tracks(per_track_csdr: Iterable[float]) -> float:
    """Median over tracks of per-track cSDR (museval ``EvalStore``, ``tracks_agg="median"``).

    NaN tracks (all frames silent) are skipped, as pandas' median does in
    museval; NaN if none is left.
    """
    return _nanmedian(np.asarray(list(per_track_csdr), dtype=np.float64))


def sdr(reference: Any, estimate: Any, eps: float = USDR_EPS) -> float:
    """uSDR in dB over the whole track and all channels (MDX 2021 / SDX 2023 challenge definition).

    ``10 log10( (sum s^2 + eps) / (sum (s - s_hat)^2 + eps) )``, sums over all
    channels and samples, ``eps = 1e-7`` as in the challenge's evaluation code
    (Music-Source-Separation-Training ``utils/metrics.py`` uses ``1e-8``; the
    difference is below 1e-6 dB for any audible reference). A silent reference
    with a silent estimate gives 0 dB; a silent reference with a non-silent
    estimate gives a large negative value; an exact estimate gives
    ``10 log10(1 + sum s^2 / eps)`` (finite).
    """
    ref, est = _pair(reference, estimate)
    num = float(np.einsum("cn,cn->", ref, ref, dtype=np.float64))
    diff = est.astype(np.float64) - ref
    den = float(np.einsum("cn,cn->", diff, diff))
    return 10.0 * math.log10((num + eps) / (den + eps))


def si_sdr(reference: Any, estimate: Any, *, zero_mean: bool = False, eps: float = 1e-8) -> float:
    """Scale-invariant SDR in dB (Le Roux, Wisdom, Erdogan, Hershey, ICASSP 2019).

    Over the flattened signal (all channels jointly, one scale factor):
    ``alpha = <s_hat, s> / ||s||^2``, ``SI-SDR = 10 log10( (||alpha s||^2 + eps) /
    (||alpha s - s_hat||^2 + eps) )`` with ``eps = 1e-8`` (as MSST). No mean
    removal unless ``zero_mean=True`` (the paper's recipe removes each
    channel's mean first; music separation code usually does not). NaN when
    the reference is digital silence (alpha undefined). A scaled copy
    ``g * s`` scores ``10 log10(1 + g^2 ||s||^2 / eps)``: very large, finite.
    """
    ref, est = _pair(reference, estimate)
    ref = ref.astype(np.float64)
    est = est.astype(np.float64)
    if zero_mean:
        ref = ref - ref.mean(axis=1, keepdims=True)
        est = est - est.mean(axis=1, keepdims=True)
    ref_energy = float(np.einsum("cn,cn->", ref, ref))
    if ref_energy == 0:
        return float("nan")
    alpha = float(np.einsum("cn,cn->", est, ref)) / ref_energy
    target = alpha * ref
    noise = target - est
    return 10.0 * math.log10(
        (alpha * alpha * ref_energy + eps) / (float(np.einsum("cn,cn->", noise, noise)) + eps)
    )


def slaney_mel_filterbank(sample_rate: float, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular mel filterbank, float64 ``[n_mels, n_fft // 2 + 1]`` (Slaney scale, area-normalised).

    ``librosa.filters.mel`` with its defaults, as MSST's bleedless/fullness use it:
    one implementation, shared with Mel-Band-RoFormer's band layout
    (:func:`stemflow.models.mel_bands.mel_filterbank`).
    """
    return mel_filterbank(sample_rate, n_fft, n_mels).astype(np.float64)


def _mel_db(audio: np.ndarray, mel: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Mel magnitude spectrogram in dB, top 80 dB kept, shape ``[channels, n_mels, frames]``.

    Hann window (periodic), centred frames with zero padding; ``20 log10(max(S, 1e-10))``
    then floored at (max over everything - 80 dB), as torchaudio ``AmplitudeToDB(top_db=80)``.
    """
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float64))
    window = torch.hann_window(n_fft, dtype=torch.float64)
    spec = torch.stft(x, n_fft, hop_length, window=window, center=True, pad_mode="constant", return_complex=True)
    db = 20.0 * torch.log10(torch.clamp(mel @ spec.abs(), min=1e-10))
    return torch.maximum(db, db.max() - 80.0)


def bleedless_fullness(
    reference: Any,
    estimate: Any,
    sample_rate: float = 44100,
    *,
    n_fft: int = 4096,
    hop_length: int = 1024,
    n_mels: int = 512,
) -> tuple[float, float]:
    """The community's "bleedless" and "fullness" scores, ``(bleedless, fullness)``, each in (0, 100].

    Definition of MSST ``utils/metrics.py`` (``bleed_full``): mel spectrograms
    (4096-point Hann STFT, hop 1024, 512 Slaney mels) of reference and estimate
    in dB with an 80 dB floor below each one's maximum; ``d = est_db - ref_db``
    per bin. ``bleedless = 100 / (1 + mean(d[d > 0]))`` (extra energy = bleed;
    100 when the estimate never exceeds the reference), ``fullness = 100 / (1 +
    mean(-d[d < 0]))`` (missing energy; 100 when never below). Identical signals
    score (100, 100); ``2 * s`` scores (100 / 7.02, 100). Computed in float64
    (MSST: float32), so values may differ in the 4th digit.
    """
    ref, est = _pair(reference, estimate)
    mel = torch.from_numpy(slaney_mel_filterbank(sample_rate, n_fft, n_mels))
    diff = _mel_db(est, mel, n_fft, hop_length) - _mel_db(ref, mel, n_fft, hop_length)
    above = diff[diff > 0]
    below = diff[diff < 0]
    mean_above = float(above.mean()) if above.numel() else 0.0
    mean_below = float(below.mean()) if below.numel() else 0.0
    return 100.0 / (1.0 + mean_above), 100.0 / (1.0 - mean_below)


def l1_freq(reference: Any, estimate: Any, *, n_fft: int = 2048, hop_length: int = 1024) -> float:
    """MSST's ``L1Freq`` score in (0, 100]: ``100 / (1 + 10 * mean| |STFT(s_hat)| - |STFT(s)| |)``.

    STFT as ``torch.stft`` defaults in MSST: rectangular window (none given),
    centred frames with reflect padding, no normalisation; the mean runs over
    channels, bins and frames. 100 means identical magnitude spectrograms.
    """
    ref, est = _pair(reference, estimate)
    if ref.shape[1] <= n_fft // 2:
        raise ValueError(f"signal of {ref.shape[1]} samples is too short for n_fft={n_fft} with reflect padding")
    spectra = [
        torch.stft(
            torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)),
            n_fft,
            hop_length,
            window=torch.ones(n_fft, dtype=torch.float64),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        ).abs()
        for a in (ref, est)
    ]
    loss = 10.0 * float((spectra[1] - spectra[0]).abs().mean())
    return 100.0 / (1.0 + loss)
