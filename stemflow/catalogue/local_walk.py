"""What a local catalogue folder holds, and which of it is listed: regular files, each real file once.

Object stores have neither links nor special files; local folders have both,
and each can stop a run: a FIFO blocks whoever opens it, ``/dev/zero`` never
ends, two folders linking to each other list every file again and again (and,
with two such links per folder, for ever), a link into the output gets past an
exclusion that compares names. The rules, applied to every local listing
(:func:`stemflow.catalogue.listing.list_audio`):

* **Only regular files are entries.** FIFOs, sockets, devices, and links to any
  of them, are skipped with a warning: never opened, never hashed.
* **Links are followed at most once per real path.** A link to a file or
  folder *inside* the catalogue is not followed: what it names is listed under
  its own path. A link leading *outside* is followed the first time its real
  path is met and skipped after that; a folder walked that way is not walked
  again when it is met inside another linked folder, and a linked file is not
  listed again from inside a linked folder. A link to a folder that holds the
  catalogue (an ancestor) is a loop and is skipped. So every real file is
  listed once, and any arrangement of links terminates.
* **Exclusions compare real paths.** A folder or file whose real path lies in
  an excluded folder (the output inside the catalogue) is skipped, however it
  is reached.
* Dangling links are skipped with a warning.

Memory: the real paths of the folders and files reached through links are
kept for the walk (the dedup needs them); they grow with the number of links
that lead outside the catalogue, not with the number of files.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stemflow.store.calls import describe_mode

logger = logging.getLogger(__name__)


def list_local_folder(path: str) -> list[dict[str, Any]]:
    """Raw entries of one local folder, sorted by name: fsspec-style dicts plus ``islink``, ``real`` and ``mode``.

    ``mode`` is what the entry *names* (a link's target; ``None`` when the link
    dangles or loops); ``real`` is the link's real path (``None`` for other entries).

    Raises:
        OSError: the folder cannot be listed.
    """
    entries = []
    with os.scandir(path) as scan:
        for item in scan:
            entry: dict[str, Any] = {"name": item.path, "islink": item.is_symlink(), "real": None}
            try:
                info = item.stat(follow_symlinks=True)
            except OSError:
                info = None
            if entry["islink"]:
                entry["real"] = os.path.realpath(item.path)
            entry["mode"] = info.st_mode if info is not None else None
            entry["size"] = info.st_size if info is not None else 0
            entry["mtime"] = info.st_mtime if info is not None else None
            entry["type"] = _kind(entry["mode"])
            entries.append(entry)
    return sorted(entries, key=lambda e: e["name"])


def _kind(mode: int | None) -> str:
    if mode is None:
        return "missing"
    if stat.S_ISDIR(mode):
        return "directory"
    return "file" if stat.S_ISREG(mode) else "other"


def _inside(path: str, folder: str) -> bool:
    """Whether real path ``path`` is ``folder`` or lies under it."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _ancestors(path: str) -> Iterable[str]:
    """``path`` and each folder above it, up to ``/``."""
    while True:
        yield path
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


@dataclass
class LocalWalk:
    """The state of one local listing: the catalogue's real root, exclusions, and what links reached.

    :meth:`accept` decides, in listing order, whether an entry of a folder is
    kept; it returns the entry's real path (the folder to walk, or the file),
    or ``None`` to skip it.
    """

    root_real: str
    excluded_real: tuple[str, ...] = ()
    linked_folders: set[str] = field(default_factory=set)
    linked_files: set[str] = field(default_factory=set)

    @classmethod
    def for_root(cls, root: str, excluded: Iterable[str]) -> LocalWalk:
        """The walk of local folder ``root``, skipping the local folders ``excluded`` (by real path)."""
        return cls(os.path.realpath(root), tuple(os.path.realpath(p).rstrip("/") or "/" for p in excluded))

    def accept(self, entry: dict[str, Any], parent_real: str) -> str | None:
        """The real path to walk or list for ``entry`` (found in the folder whose real path is ``parent_real``)."""
        name = entry["name"]
        if entry["type"] == "missing":
            logger.warning("skipping %s: a dangling link or a link loop", name)
            return None
        if entry["type"] == "other":
            logger.warning("skipping %s: %s, not a regular file (never opened)", name, describe_mode(entry["mode"]))
            return None
        real = entry["real"] if entry["islink"] else os.path.join(parent_real, os.path.basename(name))
        if any(_inside(real, folder) for folder in self.excluded_real):
            logger.warning("skipping %s: it lies in an excluded folder (%s)", name, real)
            return None
        if entry["islink"]:
            return self._follow(name, real, is_folder=entry["type"] == "directory")
        if entry["type"] == "directory" and real in self.linked_folders:
            logger.info("not listing %s again: already walked through a link", name)
            return None
        if entry["type"] == "file" and real in self.linked_files:
            logger.info("not listing %s again: already listed through a link", name)
            return None
        return real

    def _follow(self, name: str, real: str, *, is_folder: bool) -> str | None:
        """A link: its real path the first time it leads outside what is walked, else ``None``."""
        if _inside(real, self.root_real):
            logger.info("not following %s: %s is listed under its own path", name, real)
            return None
        if any(folder in self.linked_folders for folder in _ancestors(real)):
            logger.info("not following %s: %s was already walked through another link", name, real)
            return None
        if is_folder and _inside(self.root_real, real):
            logger.warning("not following %s: it links back to %s, which holds the catalogue", name, real)
            return None
        if not is_folder:
            if real in self.linked_files:
                logger.info("not following %s: %s was already listed through another link", name, real)
                return None
            self.linked_files.add(real)
        else:
            self.linked_folders.add(real)
        return real
