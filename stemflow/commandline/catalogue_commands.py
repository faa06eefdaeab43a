"""The catalogue commands of ``stemflow``: ``run``, ``status``, ``evaluate``, ``report``, ``karaoke``.

They drive the Prefect flows of ``pipelines/`` (imported inside each command, so the
``separate`` path never imports Prefect) and need the ``pipeline`` or ``report`` extra;
without it they print an install hint (:func:`stemflow.commandline.app.needs_extra`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from stemflow.commandline.app import app, cache_dir, console, needs_extra, offline_requested, out
from stemflow.errors import StemflowError


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
