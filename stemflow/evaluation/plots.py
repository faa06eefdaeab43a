"""PNG plots of the report (matplotlib, Agg backend): histograms, box plots, spectrogram strips.

Every function returns PNG bytes and closes its figure; nothing touches pyplot's
global state (figures are built with :class:`matplotlib.figure.Figure` directly,
so plots are thread-safe and no display is needed).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Okabe-Ito colours (colour-blind safe), one per model.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

#: Resolution of every PNG written.
DPI = 96


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _finite(values: Sequence[float | None]) -> np.ndarray:
    data = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return data[np.isfinite(data)]


def histogram_png(
    values_by_group: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    xlabel: str,
    thresholds: Sequence[float] = (),
    bins: int = 30,
) -> bytes:
    """Overlaid histograms (one per group, e.g. model), dashed lines at ``thresholds``.

    Null, NaN and infinite values are left out (the count shown is of what remains).
    """
    figure = Figure(figsize=(5.2, 3.0))
    axes = figure.add_subplot()
    groups = {name: _finite(values) for name, values in values_by_group.items()}
    present = [v for v in groups.values() if v.size]
    if present:
        everything = np.concatenate(present)
        low, high = float(everything.min()), float(everything.max())
        marks = [t for t in thresholds if math.isfinite(t)]
        low, high = min([low, *marks]), max([high, *marks])  # keep bars visible next to the threshold lines
        if low == high:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, bins + 1)
        for index, (name, data) in enumerate(groups.items()):
            if data.size:
                axes.hist(data, bins=edges, alpha=0.55, color=PALETTE[index % len(PALETTE)],
                          label=f"{name} (n={data.size})")
        axes.legend(fontsize=7, loc="best")
    else:
        axes.text(0.5, 0.5, "no values", ha="center", va="center", transform=axes.transAxes)
    for value in thresholds:
        axes.axvline(value, color="#C00000", linestyle="--", linewidth=1)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(xlabel, fontsize=8)
    axes.set_ylabel("stems", fontsize=8)
    axes.tick_params(labelsize=7)
    return _png(figure)


def box_plot_png(
    values: Mapping[str, Mapping[str, Sequence[float | None]]],
    *,
    title: str,
    ylabel: str,
) -> bytes:
    """Box plots grouped by stem, one box per model: ``values[stem][model] -> per-track values``."""
    stems = list(values)
    models = list(dict.fromkeys(m for per_model in values.values() for m in per_model))
    figure = Figure(figsize=(max(4.0, 1.1 * len(stems) * max(1, len(models)) ** 0.5 + 1.5), 3.2))
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(models))
    for m_index, model in enumerate(models):
        data, positions = [], []
        for s_index, stem in enumerate(stems):
            finite = _finite(values[stem].get(model, ()))
            if finite.size:
                data.append(finite)
                positions.append(s_index + (m_index - (len(models) - 1) / 2) * width)
        if not data:
            continue
        colour = PALETTE[m_index % len(PALETTE)]
        parts = axes.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True,
                             manage_ticks=False, showfliers=True)
        for box in parts["boxes"]:
            box.set(facecolor=colour, alpha=0.6)
        axes.plot([], [], color=colour, linewidth=6, alpha=0.6, label=model)
    axes.set_xticks(range(len(stems)), stems, fontsize=8)
    axes.set_xlim(-0.6, len(stems) - 0.4)
    axes.set_title(title, fontsize=10)
    axes.set_ylabel(ylabel, fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(axis="y", alpha=0.3)
    if models:
        axes.legend(fontsize=7, loc="best")
    return _png(figure)


def log_spectrogram(audio: np.ndarray, n_fft: int = 2048, hop: int = 512) -> np.ndarray:
    """Log-magnitude (dB, full scale) spectrogram of the channel mean, shape ``[n_fft // 2 + 1, frames]``.

    Args:
        audio: ``[channels, samples]`` float audio (full scale 1.0).
    """
    mono = np.asarray(audio, dtype=np.float64).mean(axis=0)
    if mono.size < n_fft:
        mono = np.pad(mono, (0, n_fft - mono.size))
    frames = np.lib.stride_tricks.sliding_window_view(mono, n_fft)[::hop]
    window = np.hanning(n_fft)
    magnitude = np.abs(np.fft.rfft(frames * window, axis=1)).T / (window.sum() / 2)
    return 20.0 * np.log10(np.maximum(magnitude, 1e-6))


def spectrogram_strip_png(
    signals: Mapping[str, np.ndarray],
    sample_rate: int,
    *,
    title: str,
    floor_db: float = -100.0,
) -> bytes:
    """One row per signal (mixture first, then each stem): log-magnitude spectrograms on a shared scale.

    Args:
        signals: name -> ``[channels, samples]``.
        sample_rate: in Hz (for the axes).
    """
    names = list(signals)
    figure = Figure(figsize=(9.0, 1.35 * len(names) + 0.6))
    axes_list = figure.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    image = None
    for axes, name in zip(axes_list, names):
        spectrum = log_spectrogram(signals[name])
        seconds = signals[name].shape[-1] / sample_rate
        image = axes.imshow(spectrum, origin="lower", aspect="auto", cmap="magma", vmin=floor_db, vmax=0.0,
                            extent=(0.0, seconds, 0.0, sample_rate / 2000.0), interpolation="nearest")
        axes.set_ylabel(f"{name}\nkHz", fontsize=7)
        axes.tick_params(labelsize=6)
    axes_list[-1].set_xlabel("seconds into the excerpt", fontsize=7)
    axes_list[0].set_title(title, fontsize=9)
    if image is not None:
        figure.colorbar(image, ax=list(axes_list), label="dBFS", fraction=0.02, pad=0.01)
    return _png(figure)


def finite_summary(values: Sequence[float | None]) -> tuple[int, float, float]:
    """``(count, median, mean)`` of the finite values (NaN when there are none)."""
    data = _finite(values)
    if not data.size:
        return 0, math.nan, math.nan
    return int(data.size), float(np.median(data)), float(np.mean(data))
