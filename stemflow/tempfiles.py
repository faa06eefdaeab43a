"""Every local temporary file and folder stemflow makes: a known name, an owner pid, swept when the owner is dead.

A worker killed by SIGKILL or the OOM killer runs no ``finally`` block, so a
temporary copy it made (bytes spooled for ffmpeg, an upload spool, an ffmpeg
output) would stay in ``/tmp`` for ever, one per death. Everything stemflow
creates outside its output therefore goes through :func:`temp_dir` or
:func:`temp_file`, which name it::

    <temp root>/stemflow-<kind>-<pid>-<random>[suffix]

where ``pid`` is the creating process. :func:`sweep_stale` (run when the CLI
starts a command and when a catalogue worker starts) removes every entry of
that shape whose pid is no longer running on this machine. An entry of a live
process is never touched, nor anything not named like this.

The temp root is :func:`tempfile.gettempdir` (``TMPDIR``) unless
:func:`set_temp_root` chose another folder (the CLI's ``--temp-dir``). It must
be local to the machine: pids mean nothing across machines.

Temporary siblings of outputs (``.<name>.<random>.tmp``, :mod:`stemflow.files`)
live next to their target, not here; recovery of the store removes those.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

PREFIX = "stemflow-"
"""Start of every temporary name stemflow makes in the temp root."""

_NAME = re.compile(r"^stemflow-(?P<kind>[a-z]+)-(?P<pid>[0-9]+)-")

_root: Path | None = None


def set_temp_root(folder: str | os.PathLike[str] | None) -> None:
    """Make temporary files under ``folder`` from now on (``None``: back to :func:`tempfile.gettempdir`)."""
    global _root
    _root = None if folder is None else Path(folder)


def temp_root() -> Path:
    """The folder temporary files go to (created if missing)."""
    root = _root if _root is not None else Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    return root


def _prefix(kind: str) -> str:
    if not kind.isalpha() or not kind.islower():
        raise ValueError(f"a temporary file kind is lower-case letters, got {kind!r}")
    return f"{PREFIX}{kind}-{os.getpid()}-"


@contextlib.contextmanager
def temp_dir(kind: str) -> Iterator[Path]:
    """A new private folder ``stemflow-<kind>-<pid>-*`` in the temp root, removed with its content afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=_prefix(kind), dir=temp_root()))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def temp_file(kind: str, suffix: str = "") -> Iterator[tuple[int, Path]]:
    """A new file ``stemflow-<kind>-<pid>-*<suffix>`` (open descriptor and path), removed afterwards.

    The descriptor is the caller's to close (``os.fdopen`` it); the file is removed whatever happens.
    """
    descriptor, name = tempfile.mkstemp(prefix=_prefix(kind), suffix=suffix, dir=temp_root())
    try:
        yield descriptor, Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (one we may not signal counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(root: str | os.PathLike[str] | None = None) -> int:
    """Remove the temporary files and folders of dead stemflow processes from ``root`` (default: the temp root).

    Returns how many entries were removed. Never raises: a folder that cannot
    be listed or an entry that cannot be removed is logged and left.
    """
    folder = Path(root) if root is not None else temp_root()
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        logger.warning("cannot list the temp root %s to sweep it: %s", folder, e)
        return 0
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None or pid_alive(int(match["pid"])):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError as e:
            logger.warning("cannot remove the stale temporary %s: %s", entry.path, e)
            continue
        removed += 1
    if removed:
        logger.info("removed %d temporary file(s) left by dead stemflow processes in %s", removed, folder)
    return removed
