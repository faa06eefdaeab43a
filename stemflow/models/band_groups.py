"""Grouped band kernels: band split and mask estimators as a few batched matmuls instead of one per band.

The reference models (MSST) run one small ``RMSNorm + Linear`` per band in the
band split and one small MLP + GLU per band and stem in the mask estimators:
62 bands x 4 stems of tiny kernels per forward for BS-RoFormer, which on a GPU
costs more in launches than in arithmetic. Here bands are grouped by their
feature width (:func:`group_bands`: equal widths together, neighbouring widths
merged while the zero padding stays small), and each group runs as one
``baddbmm`` per layer over all its bands (and, in the mask estimators, over
all stems at once).

The state-dict layout stays MSST's. :class:`GroupedBands` holds one stacked,
zero-padded storage per layer and group (non-persistent buffers), and
:meth:`GroupedBands.attach` copies every per-band parameter into its slot and
then makes the parameter a *view* of that slot. The per-band modules keep
their keys, shapes and parameter counts; ``load_state_dict``, optimizers and
in-place edits write straight into the stacked storage (nothing to rebuild,
never stale), and nothing is held twice. Moving or casting the model
(``.to()``, ``.half()``) or assigning new parameters replaces them by
independent tensors: :meth:`GroupedBands.is_current` notices (it compares data
pointers) and the model re-attaches before its next grouped forward.

Layouts (``G`` bands in a group, ``W`` its padded width, ``n`` stems, ``M`` tokens
= batch x frames, ``w_j`` the width of band ``j``); weights are stored ``[in, out]``
so that ``baddbmm`` reads them as they are (a band's ``Linear.weight`` is the
transposed view of its slot):

- band split: weight ``[G, W, D]`` (band ``j``: ``[j, :w_j, :]``), bias ``[G, 1, D]``,
  gamma ``[G, W]``; input features gathered to ``[M, G, W]`` with zeros in the padding,
  so the RMS over ``W``, rescaled by ``sqrt(w_j / W)``, is the band's own;
- mask estimators: the first layer sees the same tokens for every stem, so its
  weights stack as ``[G, in, n * out]`` (stem ``s`` at columns ``s * out``); later layers
  as ``[n * G, in, out]``; the last layer's ``2 w_j`` outputs (GLU value, then gate) sit
  at the start of a ``2 W`` slot, and one gather picks values and gates for one GLU.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_MAX_PADDING = 0.25
"""Neighbouring widths share a group while padding adds at most this share of the group's features."""

_NORM_FLOOR = 1e-12  # the reference RMSNorm divides by max(||x||, 1e-12) (F.normalize)


@dataclass(frozen=True)
class BandGroup:
    """Bands computed together: their indices (ascending) and feature widths."""

    bands: tuple[int, ...]
    widths: tuple[int, ...]

    @property
    def width(self) -> int:
        """The padded width ``W``: the widest band of the group."""
        return max(self.widths)


def group_bands(widths: Sequence[int], *, max_padding: float = DEFAULT_MAX_PADDING) -> tuple[BandGroup, ...]:
    """Group band indices by feature width: equal widths together, then neighbouring widths merged.

    Widths are visited in increasing order; a width joins the current group
    while ``bands x widest <= (1 + max_padding) x actual features``.
    Groups come out ordered by width; bands within a group in index order.
    """
    by_width: dict[int, list[int]] = {}
    for band, width in enumerate(widths):
        by_width.setdefault(int(width), []).append(band)
    groups: list[list[int]] = []
    for width in sorted(by_width):
        candidate = (groups[-1] if groups else []) + by_width[width]
        actual = sum(int(widths[b]) for b in candidate)
        if groups and len(candidate) * width <= (1 + max_padding) * actual:
            groups[-1] = candidate
        else:
            groups.append(list(by_width[width]))
    return tuple(BandGroup(tuple(sorted(g)), tuple(int(widths[b]) for b in sorted(g))) for g in groups)


class _GroupStorage(nn.Module):
    """Stacked storage of one band group (non-persistent buffers) and its gather indices."""

    def __init__(self, group: BandGroup, *, dim: int, mlp_dims: Sequence[tuple[int, int]], num_stems: int,
                 features: Sequence[Tensor], pad_feature: int) -> None:
        super().__init__()
        size, width = len(group.bands), group.width
        self.group = group
        self.size, self.width, self.num_stems, self.num_layers = size, width, num_stems, len(mlp_dims)
        # columns per stem in layer 0 (shared input): the hidden width, or 2 W when the MLP has no hidden layer
        self.first_out = 2 * width if self.num_layers == 1 else mlp_dims[0][1]
        self.eps = _NORM_FLOOR**2 / width  # rms_norm adds eps to mean(x^2) over W features
        index = torch.full((size, width), pad_feature, dtype=torch.int64, device="cpu")
        for local, band_features in enumerate(features):
            index[local, : len(band_features)] = band_features
        contiguous = group.bands == tuple(range(group.bands[0], group.bands[0] + size))
        self.band_slice = (group.bands[0], group.bands[0] + size) if contiguous else None
        buffers = {
            "band_index": torch.tensor(group.bands, dtype=torch.int64, device="cpu"),
            "feature_index": index.reshape(-1),
            "norm_scale": torch.zeros(size, width),
            "split_gamma": torch.zeros(size, width),
            "split_weight": torch.zeros(size, width, dim),
            "split_bias": torch.zeros(size, 1, dim),
        }
        for layer, (d_in, d_out) in enumerate(mlp_dims):
            d_out = 2 * width if layer == self.num_layers - 1 else d_out
            batch, columns = (size, num_stems * d_out) if layer == 0 else (num_stems * size, d_out)
            buffers[f"mask_weight_{layer}"] = torch.zeros(batch, d_in, columns)
            buffers[f"mask_bias_{layer}"] = torch.zeros(batch, 1, columns)
        for name, tensor in buffers.items():
            self.register_buffer(name, tensor, persistent=False)
        self.set_norm_scale()

    def set_norm_scale(self) -> None:
        """``norm_scale = sqrt(w_j / W)`` per band and feature (0 in the padding), exact in the buffer's dtype.

        Turns the RMS over the group's ``W`` features into the band's own, over ``w_j``.
        """
        if self.norm_scale.is_meta:
            return
        scale = torch.zeros(self.size, self.width, dtype=torch.float64)
        for local, width in enumerate(self.group.widths):
            scale[local, :width] = math.sqrt(width / self.width)
        with torch.inference_mode(False), torch.no_grad():
            # a new normal tensor, not an in-place copy: the buffer may be an inference tensor (a model
            # built under torch.inference_mode), which cannot be updated outside inference mode
            self.norm_scale = scale.to(dtype=self.norm_scale.dtype, device=self.norm_scale.device)

    band_index: Tensor
    feature_index: Tensor
    norm_scale: Tensor
    split_gamma: Tensor
    split_weight: Tensor
    split_bias: Tensor

    def mask_layer(self, layer: int) -> tuple[Tensor, Tensor]:
        """Stacked weight ``[batch, in, out]`` and bias ``[batch, 1, out]`` of mask-estimator layer ``layer``."""
        return getattr(self, f"mask_weight_{layer}"), getattr(self, f"mask_bias_{layer}")

    def split_slots(self, local: int, width: int) -> dict[str, Tensor]:
        """Views shaped like band ``local``'s band-split parameters (``0.gamma``, ``1.weight``, ``1.bias``)."""
        return {"gamma": self.split_gamma[local, :width], "weight": self.split_weight[local, :width].T,
                "bias": self.split_bias[local, 0]}

    def mask_slots(self, local: int, stem: int, layer: int, out_features: int) -> tuple[Tensor, Tensor]:
        """Views shaped like one Linear's ``weight [out, in]`` and ``bias [out]`` (band ``local``, ``stem``)."""
        weight, bias = self.mask_layer(layer)
        if layer == 0:
            start = stem * self.first_out
            return weight[local, :, start : start + out_features].T, bias[local, 0, start : start + out_features]
        row = stem * self.size + local
        return weight[row, :, :out_features].T, bias[row, 0, :out_features]

    def storages(self) -> Iterator[Tensor]:
        """Every stacked parameter buffer."""
        yield from (self.split_gamma, self.split_weight, self.split_bias)
        for layer in range(self.num_layers):
            yield from self.mask_layer(layer)

    def split(self, flat: Tensor) -> Tensor:
        """Padded features ``[M, F + 1]`` -> this group's tokens ``[M, G, D]``."""
        x = flat.index_select(1, self.feature_index).view(-1, self.size, self.width)
        x = F.rms_norm(x, (self.width,), eps=self.eps) * (self.split_gamma * self.norm_scale)
        return torch.baddbmm(self.split_bias, x.transpose(0, 1), self.split_weight).transpose(0, 1)

    def masks(self, tokens: Tensor) -> Tensor:
        """Tokens ``[M, K, D]`` -> this group's MLP outputs ``[n, M, G * 2W]`` (per band: value, gate, padding)."""
        x = tokens[:, self.band_slice[0] : self.band_slice[1]] if self.band_slice else tokens.index_select(
            1, self.band_index)
        weight, bias = self.mask_layer(0)
        h = torch.baddbmm(bias, x.transpose(0, 1), weight)  # [G, M, n * out]
        stems, size, rows = self.num_stems, self.size, x.shape[0]
        if self.num_layers == 1:
            h = h.view(size, rows, stems, 2 * self.width).permute(2, 0, 1, 3)
        else:
            h = torch.tanh(h).view(size, rows, stems, self.first_out).permute(2, 0, 1, 3)
            h = h.reshape(stems * size, rows, self.first_out)
            for layer in range(1, self.num_layers):
                weight, bias = self.mask_layer(layer)
                h = torch.baddbmm(bias, h, weight)
                if layer < self.num_layers - 1:
                    h = torch.tanh(h)
            h = h.view(stems, size, rows, 2 * self.width)
        return h.permute(0, 2, 1, 3).reshape(stems, rows, size * 2 * self.width)


class GroupedBands(nn.Module):
    """The band split and mask estimators of a Roformer, computed group by group (module docstring).

    ``band_features[k]``: int64 indices of band ``k``'s features (in the order
    its Linear reads them) into the flattened spectrogram features ``[..., num_features]``.
    ``mlp_dims``: ``(in, out)`` of each mask-estimator Linear (the last ``out``
    is per band, ``2 w_k``, and ignored). Holds no parameters and nothing
    persistent: the state dict is the per-band modules'.
    """

    def __init__(self, *, dim: int, band_features: Sequence[Tensor], num_features: int,
                 mlp_dims: Sequence[tuple[int, int]], num_stems: int,
                 max_padding: float = DEFAULT_MAX_PADDING) -> None:
        super().__init__()
        widths = [len(f) for f in band_features]
        self.plan = group_bands(widths, max_padding=max_padding)
        self.num_stems = num_stems
        self.groups = nn.ModuleList(
            _GroupStorage(group, dim=dim, mlp_dims=mlp_dims, num_stems=num_stems,
                          features=[band_features[b] for b in group.bands], pad_feature=num_features)
            for group in self.plan
        )
        concatenated = [band for group in self.plan for band in group.bands]
        order = sorted(range(len(concatenated)), key=concatenated.__getitem__)  # band k's place in the concatenation
        self.reorder = order != list(range(len(order)))
        self.register_buffer("band_order", torch.tensor(order, dtype=torch.int64, device="cpu"), persistent=False)
        self.register_buffer("glu_index", _glu_index(self.plan, len(widths)), persistent=False)
        self._bound: tuple[nn.Module, ...] = ()
        self._slots: list[tuple[dict[str, nn.Parameter | None], str, int]] = []
        self._storage_pointers: list[int] = []

    band_order: Tensor
    glu_index: Tensor

    # ---- keeping the per-band parameters as views of the stacked storage -------------------

    def _slots_of(self, band_split: nn.Module, estimators: Sequence[nn.Module]) -> Iterator[tuple[nn.Module, str, Tensor]]:
        """``(module, parameter name, slot view)`` for every per-band parameter."""
        for storage in self.groups:
            for local, (band, width) in enumerate(zip(storage.group.bands, storage.group.widths)):
                norm, linear = band_split.to_features[band]  # type: ignore[index]
                views = storage.split_slots(local, width)
                yield norm, "gamma", views["gamma"]
                yield linear, "weight", views["weight"]
                yield linear, "bias", views["bias"]
                for stem, estimator in enumerate(estimators):
                    mlp = estimator.to_freqs[band][0]  # type: ignore[index]
                    linears = [layer for layer in mlp if isinstance(layer, nn.Linear)]
                    for layer, module in enumerate(linears):
                        weight, bias = storage.mask_slots(local, stem, layer, module.out_features)
                        yield module, "weight", weight
                        yield module, "bias", bias

    def is_current(self, band_split: nn.Module, estimators: Sequence[nn.Module]) -> bool:
        """Whether every per-band parameter of these modules is still a view of its slot."""
        if self._bound != (band_split, *estimators):
            return False
        storages = [t for storage in self.groups for t in storage.storages()]
        if [t.data_ptr() for t in storages] != self._storage_pointers:
            return False
        return all((p := params[name]) is not None and p.data_ptr() == pointer for params, name, pointer in self._slots)

    def attach(self, band_split: nn.Module, estimators: Sequence[nn.Module]) -> bool:
        """Copy every per-band parameter into its slot and make it a view of it; False if it cannot.

        Meta tensors and inference tensors (a model built under
        ``torch.inference_mode``) cannot be re-pointed: the caller then keeps
        the per-band path.
        """
        slots = list(self._slots_of(band_split, estimators))
        first = getattr(slots[0][0], slots[0][1])
        if any(getattr(m, n).is_meta or getattr(m, n).is_inference() for m, n, _ in slots):
            self._bound = ()
            return False
        if self.groups[0].split_gamma.device != first.device or self.groups[0].split_gamma.dtype != first.dtype:
            self.to(device=first.device, dtype=first.dtype)
            slots = list(self._slots_of(band_split, estimators))
        for storage in self.groups:  # exact in the current dtype (a cast of the model rounded it)
            storage.set_norm_scale()
        with torch.inference_mode(False), torch.no_grad():
            for module, name, view in slots:
                view.copy_(getattr(module, name))
                getattr(module, name).data = view
        self._slots = [(m._parameters, n, view.data_ptr()) for m, n, view in slots]
        self._storage_pointers = [t.data_ptr() for storage in self.groups for t in storage.storages()]
        self._bound = (band_split, *estimators)
        return True

    # ---- the grouped forward ------------------------------------------------------------------

    def split(self, features: Tensor) -> Tensor:
        """Spectrogram features ``[b, t, F]`` -> band tokens ``[b, t, K, D]`` (BandSplit's output)."""
        batch, frames, num_features = features.shape
        flat = F.pad(features.reshape(batch * frames, num_features), (0, 1))  # a zero column for the padding
        tokens = torch.cat([storage.split(flat) for storage in self.groups], dim=1)  # [M, K, D], groups in order
        if self.reorder:
            tokens = tokens.index_select(1, self.band_order)
        return tokens.view(batch, frames, -1, tokens.shape[-1])

    def masks(self, tokens: Tensor) -> Tensor:
        """Band tokens ``[b, t, K, D]`` -> every stem's band features ``[n, b, t, sum(w)]`` (the GLU outputs)."""
        batch, frames, bands, dim = tokens.shape
        flat = tokens.reshape(batch * frames, bands, dim)
        outputs = torch.cat([storage.masks(flat) for storage in self.groups], dim=-1)  # [n, M, sum(G 2W)]
        return F.glu(outputs.index_select(-1, self.glu_index), dim=-1).view(self.num_stems, batch, frames, -1)


def _glu_index(plan: Sequence[BandGroup], num_bands: int) -> Tensor:
    """Where each band's GLU values, then gates, sit in the concatenated group outputs (band order)."""
    slot_start: dict[int, int] = {}
    offset = 0
    for group in plan:
        for local, band in enumerate(group.bands):
            slot_start[band] = offset + local * 2 * group.width
        offset += len(group.bands) * 2 * group.width
    widths = {band: width for group in plan for band, width in zip(group.bands, group.widths)}
    values = [torch.arange(slot_start[b], slot_start[b] + widths[b], device="cpu") for b in range(num_bands)]
    gates = [torch.arange(slot_start[b] + widths[b], slot_start[b] + 2 * widths[b], device="cpu") for b in range(num_bands)]
    return torch.cat(values + gates)
