"""The ``stemflow`` command line (typer + rich). ``python -m stemflow`` is the same program.

Commands: ``separate`` (files and folders, one model load), ``models list`` /
``models fetch``, and the catalogue commands ``run`` / ``status`` (which need the
``pipeline`` extra: Prefect and Ray). Environment variables are read here and
nowhere in the library: ``STEMFLOW_CACHE`` (weights cache, default
``~/.cache/stemflow``) and ``STEMFLOW_OFFLINE=1`` (never download).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from stemflow.errors import StemflowError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Split music catalogues into stems.")
models_app = typer.Typer(no_args_is_help=True, help="The model registry and the weights cache.")
app.add_typer(models_app, name="models")
console = Console(stderr=True)
out = Console()


class OutputFormat(str, Enum):
    """Stem file formats of ``separate --format``."""

    flac = "flac"
    wav = "wav"
    mp3 = "mp3"


class Precision(str, Enum):
    """Inference precisions of ``separate --precision`` (bf16/fp16: autocast; auto: float16 on CUDA, else float32)."""

    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


def cache_dir() -> Path:
    """The weights cache: ``$STEMFLOW_CACHE`` or ``~/.cache/stemflow``."""
    from stemflow.hub.cache import default_cache_dir

    return default_cache_dir(os.environ)


def offline_requested(flag: bool) -> bool:
    """Never download weights: ``--offline`` or ``STEMFLOW_OFFLINE=1``."""
    return flag or os.environ.get("STEMFLOW_OFFLINE", "").strip() in {"1", "true", "yes"}


def track_name(path: Path) -> str:
    """The output folder name of an input file: its name without audio extensions."""
    name = path.name
    for suffix in (".stem.mp4", ".stem.m4a"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def iter_inputs(inputs: Sequence[Path]) -> Iterator[Path]:
    """Input files: files as given, folders searched recursively for audio, sorted."""
    from stemflow.audio.formats import audio_suffix

    for item in inputs:
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                if audio_suffix(path.name) is not None:
                    yield path
        else:
            yield item


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Output folder names, suffixed ``-2``, ``-3``... where two inputs share a name."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        base = track_name(path)
        count = seen.get(base, 0) + 1
        seen[base] = count
        names.append(base if count == 1 else f"{base}-{count}")
    return names


@dataclass
class _Outcome:
    """One input of ``separate``: separated or not, and the message to show."""

    path: Path
    ok: bool
    message: str


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
    output_dir: Annotated[Path, typer.Option("-o", "--output-dir", help="stems go to OUTDIR/<input name>/<stem>.<ext>")],
    model: Annotated[Optional[str], typer.Option(help="registry name (see `stemflow models list`)")] = None,
    config: Annotated[Optional[Path], typer.Option(help="community-format YAML config")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="checkpoint (.ckpt/.pth/.safetensors)")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    overlap: Annotated[Optional[int], typer.Option(help="chunks covering each sample (num_overlap)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="chunks per forward pass (output does not depend on it)")] = None,
    chunk_size: Annotated[Optional[int], typer.Option(help="chunk length in samples (default: the config's)")] = None,
    format: Annotated[OutputFormat, typer.Option("--format", help="output format")] = OutputFormat.flac,
    bit_depth: Annotated[int, typer.Option(help="16 or 24 (flac/wav), 32 = float wav")] = 24,
    precision: Annotated[Precision, typer.Option(
        help="auto (float16 autocast on CUDA, float32 elsewhere), float32, or bf16/fp16 autocast")] = Precision.auto,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (GPU; eager fallback)")] = False,
    stream: Annotated[bool, typer.Option(help="bounded-memory file-to-file path for very long inputs")] = False,
    offline: Annotated[bool, typer.Option(help="never download weights")] = False,
) -> None:
    """Separate audio files into stems with one model (loaded once)."""
    from stemflow.engine.separator import Separator

    paths = list(iter_inputs(inputs))
    if not paths:
        console.print("[red]no audio files found[/red]")
        raise typer.Exit(2)
    loaded = _load(model, config, checkpoint, offline)
    separator = Separator(loaded.model, device=device, chunk_size=chunk_size, num_overlap=overlap,
                          batch_size=batch_size, precision=precision.value, compile=compile)
    console.print(f"model [bold]{loaded.name}[/bold] ({loaded.config.model_type}), stems: {', '.join(loaded.stems)}, "
                  f"device {separator.device}, chunk {separator.chunk_size}, overlap {separator.num_overlap}")
    outcomes = _separate_all(separator, paths, output_dir, _StemFiles(format.value, bit_depth, stream))
    failed = [o for o in outcomes if not o.ok]
    console.print(f"{len(outcomes) - len(failed)} separated, {len(failed)} failed -> {output_dir}")
    if failed:
        raise typer.Exit(1)


@dataclass(frozen=True)
class _StemFiles:
    """How ``separate`` writes stems: format, bit depth, and whether to stream file to file."""

    format: str
    bit_depth: int
    stream: bool


def _separate_all(separator, paths: Sequence[Path], output_dir: Path, files: _StemFiles) -> list[_Outcome]:
    """Separate every input into ``output_dir/<name>/`` under progress bars; one outcome each."""
    outcomes: list[_Outcome] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        overall = bar.add_task("all tracks", total=len(paths))
        for path, name in zip(paths, unique_names(paths)):
            track_task = bar.add_task(f"  {name}", total=None)

            def progress(done: int, total: int, _task=track_task) -> None:
                bar.update(_task, completed=done, total=total)

            try:
                message = _separate_one(separator, path, output_dir / name, files, progress)
                outcomes.append(_Outcome(path, True, message))
            except StemflowError as e:
                outcomes.append(_Outcome(path, False, str(e)))
                console.print(f"[red]failed[/red] {path}: {e}")
            bar.remove_task(track_task)
            bar.advance(overall)
    return outcomes


def _separate_one(separator, path: Path, target: Path, files: _StemFiles, progress) -> str:
    """Separate one input into ``target/<stem>.<format>``; the notes worth showing (``"streamed"``)."""
    from stemflow.audio.encode import save_audio
    from stemflow.engine.track import separate_track

    target.mkdir(parents=True, exist_ok=True)
    if files.stream:
        return _stream_one(separator, path, target, files, progress)
    result = separate_track(separator, path, name=str(path), measure_quality=False, progress=progress)
    clipped = 0
    for stem, audio in result.stems.items():
        written = save_audio(target / f"{stem}.{files.format}", audio, result.sample_rate, format=files.format,
                             bit_depth=files.bit_depth)
        clipped += written.clipped_samples
    notes = list(result.decoded.notes)
    if clipped:
        notes.append(f"{clipped} samples clipped to full scale (use --bit-depth 32 --format wav to keep them)")
    for note in notes:
        console.print(f"  [yellow]{path.name}[/yellow]: {note}")
    return "; ".join(notes)


def _stream_one(separator, path: Path, target: Path, files: _StemFiles, progress) -> str:
    """The bounded-memory file-to-file path of ``--stream`` (flac or wav)."""
    from stemflow.engine.streaming import separate_file

    if files.format == "mp3":
        raise StemflowError("--stream writes flac or wav, not mp3")
    outputs = {stem: target / f"{stem}.{files.format}" for stem in separator.stems}
    separate_file(separator, path, outputs, bit_depth=files.bit_depth, progress=progress)
    return "streamed"


@models_app.command("list")
def models_list() -> None:
    """The registry: architecture, stems, reported SDR, license, and whether the weights are here."""
    from stemflow.hub.model_list import list_model_rows

    table = Table(title=f"stemflow models (cache: {cache_dir()})")
    table.add_column("name", no_wrap=True)
    for column in ("architecture", "stems", "reported SDR", "license", "cached"):
        table.add_column(column)
    for row in list_model_rows(cache_dir()):
        table.add_row(row.name, row.architecture, ", ".join(row.stems), row.reported_sdr, row.license,
                      "yes" if row.cached else "no")
    out.print(table)


@models_app.command("fetch")
def models_fetch(name: Annotated[str, typer.Argument(help="registry name")]) -> None:
    """Download (or convert) a model's weights into the cache and verify them."""
    loaded = _load(name, None, None, offline=False)
    out.print(f"{loaded.name}: ready, weights sha256 {loaded.weights_sha256}")


@app.command()
def run(
    catalogue_url: Annotated[str, typer.Argument(help="folder, s3://bucket/prefix, ... or a CSV/Parquet manifest")],
    output_url: Annotated[str, typer.Argument(help="where stems/, metadata/ and runs/ go")],
    model: Annotated[Optional[str], typer.Option(help="registry name or config YAML (default: best cached model, "
                                                      "else spleeter-2stems)")] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="weights, when --model is a config YAML")] = None,
    shard_size: Annotated[int, typer.Option(help="tracks per shard (one Prefect task each)")] = 50,
    workers: Annotated[int, typer.Option(help="CPU actors (ignored with --gpus)")] = 1,
    gpus: Annotated[int, typer.Option(help="GPU actors, one GPU each")] = 0,
) -> None:
    """Run the nightly job once: separate every track not yet committed for the model."""
    from pipelines.separate_catalogue import run_catalogue
    from stemflow.hub.loading import default_model_name

    chosen = model or default_model_name(cache_dir())
    console.print(f"model [bold]{chosen}[/bold]; catalogue {catalogue_url} -> {output_url}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("tracks", total=None)

        def progress(done: int, planned: int) -> None:
            bar.update(task, completed=done, total=planned)

        summary = run_catalogue(catalogue_url, output_url, model=chosen, checkpoint=checkpoint,
                                shard_size=shard_size, workers=workers, gpus=gpus, progress_callback=progress,
                                cache_dir=str(cache_dir()))
    if summary.planned == 0:
        out.print(f"nothing to do: every track is already committed for {summary.model_id}")
        return
    out.print(f"run {summary.run_id} ({summary.status}): {summary.ok} committed, {summary.errors} errors, "
              f"{summary.skipped} already done by another run, {summary.wall_s:.1f} s, "
              f"{summary.tracks_per_hour:.0f} tracks/h; model_id {summary.model_id}")
    out.print(f"manifest: {summary.manifest_url}")
    for failure in summary.failures[:20]:
        out.print(f"  [red]error[/red] {failure.get('source_url', '')}: {failure.get('error', '')}")
    if summary.errors:
        raise typer.Exit(1)


@app.command()
def status(output_url: Annotated[str, typer.Argument(help="an output URL of `stemflow run`")]) -> None:
    """What is committed per model_id (markers) and recorded (Parquet rows, errors)."""
    from pipelines.separate_catalogue import catalogue_status

    rows = catalogue_status(output_url)
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


@app.command()
def evaluate(
    dataset: Annotated[str, typer.Argument(help="MUSDB18-style folder (<track>/mixture.wav + <stem>.wav) or .stem.mp4 file/folder")],
    output: Annotated[str, typer.Option("-o", "--output", help="output URL; results go to OUTPUT/evaluation/<eval_id>/")],
    model: Annotated[Optional[list[str]], typer.Option("--model", help="registry name; repeat for several models")] = None,
    config: Annotated[Optional[Path], typer.Option(help="community-format YAML config (one more model)")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="its checkpoint")] = None,
    engine: Annotated[str, typer.Option(help="ray (the catalogue's Ray stage, stems committed) or local (in-process)")] = "ray",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    workers: Annotated[int, typer.Option(help="Ray actors (engine ray)")] = 1,
    max_seconds: Annotated[Optional[float], typer.Option(help="score only the first seconds of each track")] = None,
) -> None:
    """Score models against reference stems: per-track metrics and a leaderboard (with the mixture baseline)."""
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
                            model_settings={"cache_dir": str(cache_dir()), "device": device},
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
    config: Annotated[Optional[Path], typer.Option(help="karaoke settings YAML (default configs/karaoke.yaml)")] = None,
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
        console.print(f"[red]error:[/red] {e}")
        sys.exit(2)
