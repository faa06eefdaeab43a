"""Reading checkpoints safely and loading them strictly.

Loading never unpickles arbitrary objects: ``.ckpt``/``.pt``/``.pth``/``.bin``
go through ``torch.load(weights_only=True)`` (tensors and plain containers
only), ``.safetensors`` through safetensors. Training scripts wrap the weights
in dicts (``state_dict``, ``model_state_dict``, ``state``) and DataParallel
prefixes every key with ``module.``; both are undone here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from stemflow.errors import CheckpointError

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin"})
SAFETENSORS_SUFFIX = ".safetensors"
WRAPPER_KEYS = ("state_dict", "model_state_dict", "state")
STRIPPED_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile
MAX_LISTED = 10


def _read_file(path: Path) -> object:
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise CheckpointError(f"{path}: reading .safetensors needs the 'safetensors' package") from e
        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own SafetensorError and OSError
            raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from e
    if suffix in PICKLE_SUFFIXES:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as e:
            raise CheckpointError(f"{path}: checkpoint file not found") from e
        except Exception as e:  # UnpicklingError for forbidden globals, RuntimeError for corrupt zips
            raise CheckpointError(
                f"{path}: refused or unreadable checkpoint (only tensors and plain containers are "
                f"loaded, weights_only=True): {e}"
            ) from e
    raise CheckpointError(
        f"{path}: unknown checkpoint type {suffix!r}; expected one of "
        f"{sorted(PICKLE_SUFFIXES | {SAFETENSORS_SUFFIX})}"
    )


def unwrap_state_dict(obj: object, *, source: str = "<checkpoint>") -> dict[str, Tensor]:
    """Find the state dict inside a loaded checkpoint object.

    Descends through ``state_dict`` / ``model_state_dict`` / ``state`` wrappers
    (nested too), then strips a ``module.`` (or ``_orig_mod.``) prefix shared by
    every key. Raises CheckpointError if what remains is not ``str -> Tensor``.
    """
    while isinstance(obj, Mapping):
        wrapper = next((key for key in WRAPPER_KEYS if isinstance(obj.get(key), Mapping)), None)
        if wrapper is None:
            break
        logger.debug("%s: unwrapping %r", source, wrapper)
        obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    not_tensors = [str(key) for key, value in obj.items() if not isinstance(key, str) or not isinstance(value, Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{source}: the state dict holds {len(not_tensors)} entries that are not tensors: {_listing(not_tensors)}"
        )
    state: dict[str, Tensor] = dict(obj)
    for prefix in STRIPPED_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def load_checkpoint_state(path: str | Path) -> dict[str, Tensor]:
    """Read the weights of a checkpoint file (on the CPU) as a plain state dict."""
    path = Path(path)
    return unwrap_state_dict(_read_file(path), source=str(path))


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f", ... ({len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else "")


def load_state_strict(model: nn.Module, state: Mapping[str, Tensor], source: str | Path) -> None:
    """Load ``state`` into ``model`` requiring exactly the same keys and shapes.

    On any mismatch raises CheckpointError naming ``source`` and listing the
    missing keys, unexpected keys and shape mismatches (each list truncated
    after 10 names, with the total count).
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(tensor.shape)}"
        for key, tensor in expected.items()
        if key in state and state[key].shape != tensor.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_listing(mismatched)}")
    if problems:
        raise CheckpointError(
            f"{source}: checkpoint does not fit {type(model).__name__} (strict loading): " + "; ".join(problems)
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # e.g. a dtype that cannot be copied
        raise CheckpointError(f"{source}: loading the weights into {type(model).__name__} failed: {e}") from e
