"""The input side and the loop of ``stemflow separate``: which files, then each one under progress bars.

:func:`iter_inputs` expands files and folders; :func:`separate_all` separates
the planned inputs one by one (:func:`stemflow.commandline.writing.write_result`),
shows progress and notes on the console it is given, and turns a failure into
that input's :class:`Outcome` so the others go on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from stemflow.audio.formats import audio_suffix
from stemflow.commandline.outputs import PlannedResult
from stemflow.commandline.writing import StemWriting, write_result
from stemflow.engine.separator import Separator
from stemflow.errors import StemflowError


@dataclass(frozen=True)
class Outcome:
    """One input of ``separate``: separated or not, and the message to show."""

    path: Path
    ok: bool
    message: str


def iter_inputs(inputs: Sequence[Path], exclude: Path | None = None) -> Iterator[Path]:
    """Input files: files as given, folders searched recursively for audio (sorted; symlinked folders are not
    followed), leaving out anything under ``exclude`` (the output folder, when it lies inside an input)."""
    skip = exclude.resolve() if exclude is not None else None
    for item in inputs:
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                if audio_suffix(path.name) is not None and not (skip and path.resolve().is_relative_to(skip)):
                    yield path
        else:
            yield item


def separate_all(separator: Separator, planned: Sequence[PlannedResult], owner_model: str, writing: StemWriting,
                 console: Console) -> list[Outcome]:
    """Separate every planned input under progress bars; one outcome each (a failure never stops the others)."""
    outcomes: list[Outcome] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        overall = bar.add_task("all tracks", total=len(planned))
        for item in planned:
            path = item.input.path
            if item.note:
                console.print(f"  [yellow]{escape(str(path))}[/yellow]: {escape(item.note)}")
            track_task = bar.add_task(f"  {escape(item.name)}", total=None)

            def progress(done: int, total: int, _task=track_task) -> None:
                bar.update(_task, completed=done, total=total)

            try:
                notes = write_result(separator, item, owner_model, writing, progress)
                for note in notes if notes != ["streamed"] else []:
                    console.print(f"  [yellow]{escape(path.name)}[/yellow]: {escape(note)}")
                outcomes.append(Outcome(path, True, "; ".join(notes)))
            except (StemflowError, OSError) as e:
                outcomes.append(Outcome(path, False, str(e)))
                console.print(f"[red]failed[/red] {escape(str(path))}: {escape(str(e))}")
            bar.remove_task(track_task)
            bar.advance(overall)
    return outcomes
