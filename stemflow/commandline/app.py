"""The ``stemflow`` typer application and what its commands share: consoles, option enums, the
weights cache and offline switch from the environment, and the check for a pip extra.

Commands register on :data:`app` in :mod:`stemflow.cli` (separate, models) and
:mod:`stemflow.commandline.catalogue_commands` (run, status, evaluate, report, karaoke).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(no_args_is_help=True, help="Split music catalogues into stems.")
models_app = typer.Typer(no_args_is_help=True, help="The model registry and the weights cache.")
app.add_typer(models_app, name="models")
console = Console(stderr=True)
out = Console()



class OutputFormat(str, Enum):
    """Stem file formats of ``separate --format`` (the lossy ones take ``--bitrate``)."""

    flac = "flac"
    wav = "wav"
    mp3 = "mp3"
    ogg = "ogg"
    opus = "opus"
    m4a = "m4a"


class Precision(str, Enum):
    """Inference precisions of ``separate --precision`` (bf16/fp16: autocast; auto: float16 on CUDA, else float32)."""

    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class ClipMode(str, Enum):
    """What happens to samples beyond full scale (:data:`stemflow.audio.encode.ClipPolicy`)."""

    none = "none"
    clamp = "clamp"
    rescale = "rescale"


def cache_dir() -> Path:
    """The weights cache: ``$STEMFLOW_CACHE`` or ``~/.cache/stemflow``."""
    from stemflow.hub.cache import default_cache_dir

    return default_cache_dir(os.environ)


def offline_requested(flag: bool) -> bool:
    """Never download weights: ``--offline`` or ``STEMFLOW_OFFLINE=1``."""
    return flag or os.environ.get("STEMFLOW_OFFLINE", "").strip() in {"1", "true", "yes"}


def needs_extra(extra: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command that needs a pip extra: without it, an install hint and exit code 2, no traceback."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def checked(*args: Any, **kwargs: Any) -> Any:
            from stemflow.commandline.options import missing_extra

            hint = missing_extra(extra)
            if hint is not None:
                console.print(f"[red]error:[/red] {escape(hint)}")
                raise typer.Exit(2)
            return command(*args, **kwargs)
        return checked
    return decorate


def _version(value: bool) -> None:
    if value:
        from stemflow.commandline.options import version_text

        out.print(version_text())
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version (and torch's, Python's) and exit")] = False,
) -> None:
    """Split music catalogues into stems."""
