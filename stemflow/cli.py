"""The ``stemflow`` command line (typer + rich). ``python -m stemflow`` is the same program.

Commands: ``separate`` (files and folders, one model load), ``models list`` /
``models fetch``, and the catalogue commands ``run`` / ``status`` /
``evaluate`` / ``report`` / ``karaoke`` (which need the ``pipeline`` or
``report`` extra; without it they print an install hint). Environment
variables are read here and nowhere in the library: ``STEMFLOW_CACHE``
(weights cache, default ``~/.cache/stemflow``), ``STEMFLOW_OFFLINE=1`` (never
download) and ``STEMFLOW_LOG_LEVEL``. Shell completion: ``stemflow
--install-completion``. Helpers (output layout, option values, writing one
input) are in :mod:`stemflow.commandline`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from stemflow.audio.blocks import DEFAULT_MAX_DECODED_BYTES
from stemflow.commandline.outputs import DEFAULT_TEMPLATE, track_name
from stemflow.errors import StemflowError
from stemflow.tempfiles import set_temp_root, sweep_stale

__all__ = ["app", "main", "track_name", "unique_names"]

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


def unique_names(paths: Sequence[Path]) -> list[str]:
    """``{track}`` names of inputs written to an empty output folder (``-2``, ``-3``... where names repeat)."""
    import tempfile

    from stemflow.commandline.outputs import FilenameTemplate, ResultLayout, plan_results

    with tempfile.TemporaryDirectory() as empty:
        layout = ResultLayout(Path(empty), FilenameTemplate.parse(DEFAULT_TEMPLATE), "model", ("stem",), "flac")
        return [planned.name for planned in plan_results(paths, layout)]


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
    stream: Annotated[Optional[bool], typer.Option("--stream/--in-memory", help="bounded memory (decode, separate "
                                                  "and write block by block; the default whenever the options "
                                                  "allow) or the whole track in memory")] = None,
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
    writing.check_stream()
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


@app.command()
@needs_extra("pipeline")
def run(
    catalogue_url: Annotated[str, typer.Argument(help="folder, s3://bucket/prefix, ... or a CSV/JSONL/Parquet manifest")],
    output_url: Annotated[str, typer.Argument(help="where stems/, metadata/, index/ and runs/ go")],
    model: Annotated[Optional[str], typer.Option(help="registry name or config YAML (default: best cached model, "
                                                      "else spleeter-2stems)")] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="weights, when --model is a config YAML")] = None,
    shard_size: Annotated[int, typer.Option(help="tracks per shard (one Parquet part and journal entry each)")] = 50,
    workers: Annotated[int, typer.Option(help="CPU actors (ignored with --gpus)")] = 1,
    gpus: Annotated[int, typer.Option(help="GPU actors, one GPU each")] = 0,
    cpus_per_worker: Annotated[Optional[float], typer.Option(
        help="CPUs each actor reserves for decoding, measures and uploads (default: its node's share)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only count: catalogue, already committed, to do")] = False,
    allow_source: Annotated[Optional[list[str]], typer.Option(
        "--allow-source", help="URL prefix outside the catalogue's location that manifest rows may name "
                               "(repeatable; '*' for any)")] = None,
) -> None:
    """Run the nightly job once: separate every track not yet committed for the model.

    SIGTERM or Ctrl-C stops it gracefully (running tracks finish, nothing is
    half-committed, the run manifest says ``cancelled``; exit code 130); the next
    run continues where it stopped.
    """
    import threading

    # Prefect's ephemeral API server gets 20 s to start by default: too little on a busy small machine
    # (set before Prefect is imported: it reads its settings then)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from pipelines.separate_catalogue import dry_run as plan_only
    from pipelines.separate_catalogue import run_catalogue
    from stemflow.hub.loading import default_model_name
    chosen = model or default_model_name(cache_dir())
    allowed = tuple(allow_source or ())
    console.print(f"model [bold]{chosen}[/bold]; catalogue {catalogue_url} -> {output_url}")
    if dry_run:
        model_id, counts = plan_only(catalogue_url, output_url, model=chosen, checkpoint=checkpoint,
                                     cache_dir=str(cache_dir()), allow_sources=allowed)
        out.print(f"dry run for {model_id}: catalogue {counts.catalogue} tracks, {counts.committed} already "
                  f"committed, {counts.planned} to do ({counts.rejected} refused entries, "
                  f"{counts.duplicates} duplicates); nothing separated")
        return
    stop = threading.Event()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("tracks", total=None)

        def progress(done: int, planned: int) -> None:
            bar.update(task, completed=done, total=planned)

        summary = run_catalogue(catalogue_url, output_url, model=chosen, checkpoint=checkpoint,
                                shard_size=shard_size, workers=workers, gpus=gpus, progress_callback=progress,
                                cache_dir=str(cache_dir()), allow_sources=allowed, stop=stop,
                                stage=None if cpus_per_worker is None else {"cpus_per_worker": cpus_per_worker})
    _print_run(summary)


def _print_run(summary) -> None:
    """What ``run`` says at the end; exits 1 with error rows, 130 when stopped."""
    if summary.planned == 0 and summary.status != "cancelled":
        out.print(f"nothing to do: every track of the catalogue ({summary.catalogue}) is already committed for "
                  f"{summary.model_id}")
        return
    by_type = ", ".join(f"{k} {v}" for k, v in sorted(summary.errors_by_type.items()))
    out.print(f"run {summary.run_id} ({summary.status}): {summary.ok} committed, {summary.errors} errors"
              f"{f' ({by_type})' if by_type else ''}, {summary.skipped} already done by another run, "
              f"{summary.wall_s:.1f} s, {summary.tracks_per_hour:.0f} tracks/h; model_id {summary.model_id}")
    quarantined = summary.quarantine.get("counts", {})
    if quarantined:
        out.print(f"quarantined (unreadable in the output, left in place): {quarantined}")
    out.print(f"manifest: {summary.manifest_url}")
    for failure in summary.failures[:20]:
        out.print(f"  [red]error[/red] {failure.get('source_url', '')}: {failure.get('error', '')}")
    if summary.status == "cancelled":
        out.print("stopped on request: re-run the same command to continue")
        raise typer.Exit(130)
    if summary.errors:
        raise typer.Exit(1)


@app.command()
@needs_extra("pipeline")
def status(
    output_url: Annotated[str, typer.Argument(help="an output URL of `stemflow run`")],
    json_output: Annotated[bool, typer.Option("--json", help="everything as JSON: counts, errors by type, "
                                                              "index, runs, quarantine")] = False,
) -> None:
    """What is committed per model_id (markers) and recorded (Parquet rows, errors)."""
    from pipelines.runtime import status_report

    report = status_report(output_url)
    if json_output:
        import json

        typer.echo(json.dumps(report, indent=1, default=str))
        return
    rows = report["models"]
    if not rows:
        out.print(f"nothing committed under {output_url}")
        return
    table = Table(title=f"stemflow status: {output_url}")
    table.add_column("model_id", no_wrap=True)
    for column in ("committed", "ok (parquet)", "rows", "errors"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["model_id"]), str(row["committed_tracks"]), str(row["ok_tracks"]), str(row["rows"]),
                      str(row["error_rows"]))
    out.print(table)
    for row in rows:
        if row["errors_by_type"]:
            out.print(f"{row['model_id']}: errors by type {row['errors_by_type']}")
    if report["quarantine"]["counts"]:
        out.print(f"quarantined (unreadable, left in place): {report['quarantine']['counts']}")
        for item in report["quarantine"]["items"][:20]:
            out.print(f"  {item['kind']} {item['url']}: {item['reason']}")
    if report["runs"]["unfinished"]:
        out.print(f"runs with unrecorded work (recovered by the next run): {report['runs']['unfinished']}")


@app.command()
@needs_extra("pipeline")
def evaluate(
    dataset: Annotated[str, typer.Argument(help="MUSDB18-style folder (<track>/mixture.wav + <stem>.wav) or .stem.mp4 file/folder")],
    output: Annotated[str, typer.Option("-o", "--output", help="output URL; results go to OUTPUT/evaluation/<eval_id>/")],
    model: Annotated[Optional[list[str]], typer.Option("--model", help="registry name; repeat for several models")] = None,
    config: Annotated[Optional[Path], typer.Option(help="community-format YAML config (one more model)")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="its checkpoint")] = None,
    engine: Annotated[str, typer.Option(help="ray (the catalogue's Ray stage, stems committed) or local (in-process)")] = "ray",
    device: Annotated[str, typer.Option(help="auto (CUDA if present, else CPU), cpu, cuda, cuda:1, mps")] = "auto",
    workers: Annotated[int, typer.Option(help="Ray actors (engine ray)")] = 1,
    max_seconds: Annotated[Optional[float], typer.Option(help="score only the first seconds of each track")] = None,
) -> None:
    """Score models against reference stems: per-track metrics and a leaderboard (with the mixture baseline)."""
    from stemflow.commandline.options import resolve_device
    from stemflow.evaluation.leaderboard import LEADERBOARD_HEADERS

    try:
        from pipelines.evaluate import run_evaluation
    except ImportError as e:
        raise StemflowError(f"the evaluation flow needs the `pipeline` extra and the repo's pipelines/ package: {e}") from e
    models = list(model or [])
    checkpoints: dict[str, str] = {}
    if config is not None or checkpoint is not None:
        if config is None or checkpoint is None:
            raise typer.BadParameter("--config and --checkpoint go together")
        models.append(str(config))
        checkpoints[str(config)] = str(checkpoint)
    if not models:
        from stemflow.hub.loading import default_model_name

        models = [default_model_name(cache_dir())]
    result = run_evaluation(dataset, output, models, checkpoints=checkpoints, engine=engine,
                            model_settings={"cache_dir": str(cache_dir()), "device": resolve_device(device)},
                            stage={"workers": workers}, max_duration_s=max_seconds)
    table = Table(title=f"leaderboard {result['eval_id']} (cSDR: median of 1 s frames, median over tracks; "
                        "uSDR: whole track, mean over tracks)")
    for key, label in LEADERBOARD_HEADERS.items():
        table.add_column(label, justify="left" if key in ("model_name", "stem") else "right")
    for row in result["leaderboard"]:
        table.add_row(*[f"{row[k]:.2f}" if isinstance(row[k], float) else str(row[k]) for k in LEADERBOARD_HEADERS],
                      style="dim" if row["model_name"] == "mixture" else None)
    out.print(table)
    console.print(f"metrics: {result['urls']['metrics.parquet']} ({result['errors']} error rows)")
    if result["errors"]:
        raise typer.Exit(1)


@app.command()
@needs_extra("report")
def report(
    output: Annotated[str, typer.Argument(help="output URL of a catalogue run or an evaluation")],
    name: Annotated[str, typer.Option(help="writes OUTPUT/reports/<name>.html and <name>/*.png")] = "report",
    tracks: Annotated[int, typer.Option(help="tracks with spectrograms and players (flagged first)")] = 3,
) -> None:
    """Write a self-contained HTML report (flags, distributions, comparisons, spectrograms)."""
    from stemflow.evaluation.report import build_report

    result = build_report(output, name=name, spectrogram_tracks=tracks)
    console.print(f"{len(result.flags)} flagged stems, {result.record_rows} record rows, "
                  f"{len(result.evaluations)} evaluations")
    out.print(result.html_url)


@app.command()
@needs_extra("pipeline")
def karaoke(
    source: Annotated[str, typer.Argument(help="catalogue (folder/prefix or CSV/Parquet manifest) or a separation output URL")],
    dataset: Annotated[str, typer.Argument(help="dataset URL; the version goes to DATASET/<version>/")],
    model: Annotated[str, typer.Option(help="registry name or community-format config YAML")] = "spleeter-2stems",
    output_url: Annotated[Optional[str], typer.Option("--output-url", help="where the stems are committed (catalogue input)")] = None,
    format: Annotated[Optional[str], typer.Option("--format", help="flac or wav (default: configs/karaoke.yaml)")] = None,
    loudness: Annotated[Optional[str], typer.Option(help="backing target in LUFS, e.g. -14, or 'none'")] = None,
    stems4: Annotated[Optional[bool], typer.Option("--stems4/--no-stems4", help="also write drums/bass/other")] = None,
    group_column: Annotated[Optional[str], typer.Option("--group-column", help="manifest column grouping the splits")] = None,
    splits: Annotated[Optional[str], typer.Option(help="train,validation,test fractions, e.g. 0.8,0.1,0.1")] = None,
    seed: Annotated[Optional[int], typer.Option(help="split seed")] = None,
    residue: Annotated[Optional[bool], typer.Option("--residue/--no-residue", help="second vocal pass on the backing")] = None,
    webdataset: Annotated[Optional[bool], typer.Option("--webdataset/--no-webdataset", help="also write tar shards")] = None,
    sum_to_mixture: Annotated[Optional[bool], typer.Option("--sum-to-mixture/--no-sum-to-mixture", help="full-band "
                                                           "backing: the stems sum to the mixture (default on)")] = None,
    config: Annotated[Optional[Path], typer.Option(help="karaoke settings YAML (default: the installed configs/karaoke.yaml)")] = None,
    workers: Annotated[int, typer.Option(help="Ray actors for the separation")] = 1,
) -> None:
    """Build a versioned karaoke dataset (backing + guide vocal, scores, splits, card) from a catalogue."""
    try:
        from pipelines.karaoke import karaoke_dataset
    except ImportError as e:
        raise StemflowError(f"the karaoke flow needs the `pipeline` extra and the repo's pipelines/ package: {e}") from e
    try:
        fractions = [float(f) for f in splits.split(",")] if splits else None
    except ValueError as e:
        raise typer.BadParameter(f"--splits: {splits!r} is not three comma-separated numbers") from e
    result = karaoke_dataset(source, dataset, model=model, output_url=output_url, format=format, loudness=loudness,
                             stems4=stems4, group_column=group_column, splits=fractions, seed=seed, residue=residue,
                             webdataset=webdataset, config_path=str(config) if config else None, workers=workers,
                             sum_to_mixture=sum_to_mixture,
                             model_settings={"cache_dir": str(cache_dir()), "offline": offline_requested(False)})
    if not result["created"]:
        console.print(f"version {result['version']} already complete: nothing to do")
    else:
        counts = result["counts"]
        console.print(f"{counts['tracks']} tracks, {counts['accepted']} accepted "
                      + ", ".join(f"{k} {v['accepted']}/{v['tracks']}" for k, v in counts["splits"].items()))
    out.print(result["version_url"], soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``stemflow`` script; library errors become a message and exit code 2."""
    logging.basicConfig(level=os.environ.get("STEMFLOW_LOG_LEVEL", "WARNING"),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=list(argv) if argv is not None else None, prog_name="stemflow", standalone_mode=True)
    except StemflowError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}")
        sys.exit(2)
