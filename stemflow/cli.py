"""The ``stemflow`` command line (typer + rich). ``python -m stemflow`` is the same program.

Commands: ``separate`` (files and folders, one model load), ``models list`` /
``models fetch``, and the catalogue commands ``run`` / ``status`` /
``evaluate`` / ``report`` / ``karaoke`` (which need the ``pipeline`` or
``report`` extra; without it they print an install hint). Environment
variables are read here and nowhere in the library: ``STEMFLOW_CACHE``
(weights cache, default ``~/.cache/stemflow``), ``STEMFLOW_OFFLINE=1`` (never
download) and ``STEMFLOW_LOG_LEVEL``. Shell completion: ``stemflow
--install-completion``. The application and its shared options are in
:mod:`stemflow.commandline.app`, the catalogue commands in
:mod:`stemflow.commandline.catalogue_commands`, helpers (output layout, option
values, writing one input) elsewhere in :mod:`stemflow.commandline`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from stemflow.audio.blocks import DEFAULT_MAX_DECODED_BYTES
from stemflow.commandline.outputs import DEFAULT_TEMPLATE, track_name
from stemflow.errors import StemflowError
from stemflow.tempfiles import set_temp_root, sweep_stale

from stemflow.commandline.app import (  # noqa: F401 - the application and what tests import from here
    ClipMode, OutputFormat, Precision, app, cache_dir, console, models_app, needs_extra, offline_requested, out,
)

__all__ = ["app", "main", "track_name", "unique_names"]


def unique_names(paths: Sequence[Path]) -> list[str]:
    """``{track}`` names of inputs written to an empty output folder (``-2``, ``-3``... where names repeat)."""
    import tempfile

    from stemflow.commandline.outputs import FilenameTemplate, ResultLayout, plan_results

    with tempfile.TemporaryDirectory() as empty:
        layout = ResultLayout(Path(empty), FilenameTemplate.parse(DEFAULT_TEMPLATE), "model", ("stem",), "flac")
        return [planned.name for planned in plan_results(paths, layout)]


def _load(model: Optional[str], config: Optional[Path], checkpoint: Optional[Path], offline: bool):
    """The model of ``--model`` (downloaded with a progress bar) or of ``--config``/``--checkpoint``."""
    from stemflow.hub.loading import default_model_name, load_custom, load_registered

    if config is not None or checkpoint is not None:
        if config is None or checkpoint is None:
            raise typer.BadParameter("--config and --checkpoint go together")
        if model is not None:
            raise typer.BadParameter("give either --model or --config/--checkpoint, not both")
        return load_custom(config, checkpoint)
    name = model or default_model_name(cache_dir())
    with Progress(TextColumn("downloading {task.description}"), BarColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(name, total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        return load_registered(name, cache_dir(), offline=offline_requested(offline), progress=progress)


@app.command()
def separate(
    inputs: Annotated[list[Path], typer.Argument(help="audio files or folders (searched recursively)")],
    output_dir: Annotated[Path, typer.Option("-o", "--output-dir", help="every file goes under OUTDIR")],
    model: Annotated[Optional[str], typer.Option(help="registry name or a checkpoint file name it knows "
                                                      "(see `stemflow models list`)")] = None,
    config: Annotated[Optional[Path], typer.Option(help="community-format YAML config")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="checkpoint (.ckpt/.pth/.safetensors)")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA if present, else CPU), cpu, cuda, cuda:1, mps")] = "auto",
    overlap: Annotated[Optional[int], typer.Option(help="chunks covering each sample (num_overlap)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="chunks per forward pass (output does not depend on it)")] = None,
    chunk_size: Annotated[Optional[int], typer.Option(help="chunk length in samples (default: the config's)")] = None,
    format: Annotated[OutputFormat, typer.Option("--format", help="output format")] = OutputFormat.flac,
    bit_depth: Annotated[int, typer.Option(help="16 or 24 (flac/wav), 32 = float wav")] = 24,
    bitrate: Annotated[Optional[int], typer.Option(help="kb/s of mp3/ogg/opus/m4a (default 320/192/160/256)")] = None,
    sample_rate: Annotated[Optional[int], typer.Option("--sample-rate", help="output sample rate in Hz (default: "
                                                       "the model's)")] = None,
    clip_mode: Annotated[ClipMode, typer.Option("--clip-mode", help="beyond full scale: none (saturate, "
                                                "reported), clamp, rescale (whole stem)")] = ClipMode.none,
    stem: Annotated[Optional[list[str]], typer.Option("--stem", help="write only this stem (repeatable)")] = None,
    two_stems: Annotated[Optional[str], typer.Option("--two-stems", help="write STEM and no_STEM (the sum of the "
                                                     "others), e.g. vocals")] = None,
    sum_to_mixture: Annotated[bool, typer.Option("--sum-to-mixture/--no-sum-to-mixture", help="put what the model "
                                                 "left out into instrumental/other, so the stems sum to the "
                                                 "input")] = False,
    filename: Annotated[str, typer.Option("--filename", help="path of each file under OUTDIR: {track} {stem} {ext} "
                                          "{model}")] = DEFAULT_TEMPLATE,
    precision: Annotated[Precision, typer.Option(
        help="auto (float16 autocast on CUDA, float32 elsewhere), float32, or bf16/fp16 autocast")] = Precision.auto,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (GPU; eager fallback)")] = False,
    stream: Annotated[Optional[bool], typer.Option("--stream/--in-memory", help="bounded memory (decode, separate, "
                                                  "convert and write block by block; the default, with every "
                                                  "option) or the whole track in memory")] = None,
    max_decoded_bytes: Annotated[int, typer.Option("--max-decoded-bytes", help="refuse an input that decodes to "
                                                   "more (seconds x rate x channels x 4), checked before and while "
                                                   "decoding")] = DEFAULT_MAX_DECODED_BYTES,
    temp_dir: Annotated[Optional[Path], typer.Option("--temp-dir", help="local folder for temporary files "
                                                     "(default: TMPDIR); leftovers of dead runs are swept")] = None,
    offline: Annotated[bool, typer.Option(help="never download weights")] = False,
) -> None:
    """Separate audio files into stems with one model (loaded once)."""
    from stemflow.commandline.batch import iter_inputs, separate_all
    from stemflow.commandline.options import library_precision, resolve_device
    from stemflow.commandline.outputs import FilenameTemplate, ResultLayout, plan_results
    from stemflow.commandline.writing import StemWriting
    from stemflow.engine.separator import Separator

    writing = StemWriting(format=format.value, bit_depth=bit_depth, bitrate_kbps=bitrate, clip=clip_mode.value,
                          sample_rate=sample_rate, only=tuple(stem or ()), two_stems=two_stems,
                          sum_to_mixture=sum_to_mixture, stream=stream, max_decoded_bytes=max_decoded_bytes)
    set_temp_root(temp_dir)
    sweep_stale()
    template = FilenameTemplate.parse(filename)
    paths = list(iter_inputs(inputs, exclude=output_dir))
    if not paths:
        console.print("[red]no audio files found[/red]")
        raise typer.Exit(2)
    loaded = _load(model, config, checkpoint, offline)
    separator = Separator(loaded.model, device=resolve_device(device), chunk_size=chunk_size, num_overlap=overlap,
                          batch_size=batch_size, precision=library_precision(precision.value), compile=compile)
    layout = ResultLayout(output_dir, template, loaded.name, writing.output_stems(tuple(separator.all_stems)),
                          format.value, owner_model=f"{loaded.name}@{loaded.weights_sha256[:12]}")
    planned = plan_results(paths, layout)
    console.print(f"model [bold]{loaded.name}[/bold] ({loaded.config.model_type}), stems: {', '.join(layout.stems)}, "
                  f"device {separator.device}, chunk {separator.chunk_size}, overlap {separator.num_overlap}")
    outcomes = separate_all(separator, planned, layout.owner, writing, console)
    failed = [o for o in outcomes if not o.ok]
    console.print(f"{len(outcomes) - len(failed)} separated, {len(failed)} failed -> {output_dir}")
    if failed:
        raise typer.Exit(1)


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="print the rows as JSON (one object per model)")] = False,
) -> None:
    """The registry: architecture, stems, reported SDR, license, cached?, and the other names each model answers to."""
    from stemflow.hub.model_list import list_model_rows

    rows = list_model_rows(cache_dir())
    if as_json:
        out.print_json(json.dumps([row.as_dict() for row in rows]))
        return
    table = Table(title=f"stemflow models (cache: {cache_dir()})")
    table.add_column("name", no_wrap=True)
    for column in ("architecture", "stems", "reported SDR", "license", "cached", "also known as"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.name, row.architecture, ", ".join(row.stems), row.reported_sdr, row.license,
                      "yes" if row.cached else "no", ", ".join(row.aliases))
    out.print(table)


@models_app.command("fetch")
def models_fetch(name: Annotated[str, typer.Argument(help="registry name (or a checkpoint file name it knows)")]) -> None:
    """Download (or convert) a model's weights into the cache and verify them."""
    loaded = _load(name, None, None, offline=False)
    out.print(f"{loaded.name}: ready, weights sha256 {loaded.weights_sha256}")


import stemflow.commandline.catalogue_commands  # noqa: E402,F401 - registers run/status/evaluate/report/karaoke after separate and models


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``stemflow`` script; library errors become a message and exit code 2."""
    logging.basicConfig(level=os.environ.get("STEMFLOW_LOG_LEVEL", "WARNING"),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=list(argv) if argv is not None else None, prog_name="stemflow", standalone_mode=True)
    except StemflowError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        sys.exit(2)
