"""Option values of the command line that need more than a type: device, precision, extras, version.

* ``--device auto`` (the default, as in demucs and audio-separator): CUDA when
  torch sees a GPU, else Apple's MPS when present, else the CPU; ``cpu``,
  ``cuda``, ``cuda:N`` and ``mps`` are checked against what torch sees, so a
  wrong index is a clear message, not a CUDA error deep in a forward pass.
* ``--precision auto`` is passed to the library, which picks per device
  (the model runtime's precision policy); float32 while the library does
  not know ``auto`` yet (:func:`library_precision`).
* The catalogue commands need optional extras (``pipeline``: Prefect and Ray;
  ``report``: matplotlib); :func:`missing_extra` turns their absence into an
  install hint instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import re
from importlib import metadata

from stemflow.errors import ConfigError

EXTRAS: dict[str, tuple[str, ...]] = {
    "pipeline": ("prefect", "ray"),
    "report": ("matplotlib",),
}
"""pip extra of stemflow -> the modules it provides."""

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_device(text: str) -> str:
    """The torch device for ``--device`` (``auto``: CUDA, else MPS, else CPU).

    Raises:
        ConfigError: an unknown spelling, or a device torch does not see (naming the ones it does).
    """
    import torch

    value = text.strip().lower()
    if not _DEVICE.match(value):
        raise ConfigError(f"--device {text!r}: use auto, cpu, cuda, cuda:N or mps")
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if value == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if value.startswith("cuda"):
        index = int(value.split(":")[1]) if ":" in value else 0
        if index >= cuda:
            seen = f"{cuda} CUDA device(s)" if cuda else "no CUDA device"
            raise ConfigError(f"--device {text}: torch sees {seen}; use --device auto or cpu")
    if value == "mps" and not mps:
        raise ConfigError("--device mps: this torch has no usable MPS backend; use --device auto or cpu")
    return value


def library_precision(value: str) -> str:
    """``--precision``: ``auto`` goes to the library once its Separator resolves it (the model runtime's
    precision policy); until then ``auto`` means float32, the library's former default."""
    from stemflow.engine.separator import PRECISIONS

    return value if value != "auto" or "auto" in PRECISIONS else "float32"


def missing_extra(extra: str) -> str | None:
    """An install hint when a module of ``extra`` is not installed, else ``None``.

    Looks the modules up without importing them (Ray alone takes seconds to import).
    """
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # ValueError: a module blocked in sys.modules
            found = False
        if not found:
            return (f"this command needs stemflow's '{extra}' extra ({module} is not installed); "
                    f"install it with: pip install 'stemflow[{extra}]'")
    return None


def version_text() -> str:
    """``stemflow <version>`` plus the versions of torch and Python it runs on."""
    import platform

    import stemflow

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"stemflow {stemflow.__version__} (torch {torch_version}, Python {platform.python_version()})"
