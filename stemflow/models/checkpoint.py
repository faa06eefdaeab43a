"""Reading checkpoints safely, verified, and loading them strictly.

Loading never unpickles arbitrary objects: ``.ckpt``/``.pt``/``.pth``/``.bin``
go through ``torch.load(weights_only=True)`` (tensors and plain containers
only), ``.safetensors`` through safetensors. Training scripts wrap the weights
in dicts (``state_dict``, ``model_state_dict``, ``state``) and DataParallel
prefixes every key with ``module.``; both are undone here.

**Verified loads.** :func:`load_verified_state` reads the file *once* into
memory, hashes those bytes (sha256) and parses the same bytes, so the hash it
reports is the hash of the weights loaded: a file swapped or modified on disk
between a check and the load cannot slip in, and no cache of earlier checks
(size, mtime) is trusted. With ``expected_sha256`` (the full hash, or a prefix
of at least 12 hex digits such as the one in a ``model_id``) a mismatch is a
:class:`~stemflow.errors.ChecksumError` naming the file and both hashes, raised
before anything is parsed. The cost: the file's bytes and the tensors are in
memory together while loading (twice the checkpoint's size, briefly).
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from stemflow.errors import CheckpointError, ChecksumError
from stemflow.files import NotARegularFileError, open_regular_file

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin"})
SAFETENSORS_SUFFIX = ".safetensors"
WRAPPER_KEYS = ("state_dict", "model_state_dict", "state")
STRIPPED_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile
MAX_LISTED = 10
MIN_EXPECTED_HEX = 12
"""Shortest accepted expected hash: the 12 hex digits a ``model_id`` carries."""

_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class VerifiedState:
    """A checkpoint's state dict and the sha256 of the very bytes it was parsed from."""

    state: dict[str, Tensor]
    sha256: str


def check_expected_sha256(expected: str | None) -> str | None:
    """``expected`` in lower case, if it is a full sha256 or a prefix of >= 12 hex digits.

    Raises:
        ChecksumError: anything else (a typo must not silently disable the check).
    """
    if expected is None:
        return None
    value = str(expected).strip().lower()
    if not MIN_EXPECTED_HEX <= len(value) <= 64 or _HEX.fullmatch(value) is None:
        raise ChecksumError(f"expected weights sha256 {expected!r}: give 12 to 64 hex digits")
    return value


def verify_sha256(actual: str, expected: str | None, what: str) -> None:
    """Raise :class:`ChecksumError` unless ``actual`` starts with ``expected`` (``None``: no check)."""
    wanted = check_expected_sha256(expected)
    if wanted is not None and not actual.lower().startswith(wanted):
        raise ChecksumError(f"{what} has sha256 {actual}, expected {wanted}: refused (not loaded)")


def read_verified_bytes(path: str | Path, expected_sha256: str | None = None) -> tuple[bytes, str]:
    """The bytes of a local weights file, read once, and their sha256 (checked against ``expected_sha256``).

    Raises:
        CheckpointError: no such file, not a regular file, or unreadable.
        ChecksumError: the bytes' sha256 is not the expected one.
    """
    path = Path(path)
    try:
        with open_regular_file(path) as handle:  # never blocks on a FIFO, never reads a device
            data = handle.read()
    except NotARegularFileError as e:
        raise CheckpointError(f"{path}: not a regular file ({e})") from e
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: checkpoint file not found") from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint: {e}") from e
    sha256 = hashlib.sha256(data).hexdigest()
    verify_sha256(sha256, expected_sha256, f"{path}")
    return data, sha256


def _read_file(path: Path, data: bytes) -> object:
    """Parse checkpoint ``data`` (the bytes of ``path``, whose suffix says the format)."""
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        try:
            from safetensors.torch import load as load_safetensors
        except ImportError as e:
            raise CheckpointError(f"{path}: reading .safetensors needs the 'safetensors' package") from e
        try:
            return load_safetensors(data)
        except Exception as e:  # safetensors raises its own SafetensorError and OSError
            raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from e
    if suffix in PICKLE_SUFFIXES:
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
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


def load_verified_state(path: str | Path, *, expected_sha256: str | None = None) -> VerifiedState:
    """Read a checkpoint once, hash its bytes, check them, and parse the same bytes (see the module docstring).

    Raises:
        CheckpointError: missing, unreadable, refused (not weights only) or not a state dict.
        ChecksumError: its sha256 is not ``expected_sha256``.
    """
    path = Path(path)
    if path.suffix.lower() not in PICKLE_SUFFIXES | {SAFETENSORS_SUFFIX}:
        _read_file(path, b"")  # raises the unknown-type error before reading anything
    data, sha256 = read_verified_bytes(path, expected_sha256)
    state = unwrap_state_dict(_read_file(path, data), source=str(path))
    return VerifiedState(state, sha256)


def load_checkpoint_state(path: str | Path, *, expected_sha256: str | None = None) -> dict[str, Tensor]:
    """Read the weights of a checkpoint file (on the CPU) as a plain state dict (verified load)."""
    return load_verified_state(path, expected_sha256=expected_sha256).state


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
