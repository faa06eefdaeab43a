"""A local catalogue can neither hang nor loop a listing: special files, link farms, links into the output.

Each listing runs in a child process with a timeout, so a listing that blocks on a
FIFO or never ends fails the test instead of hanging the suite. The trees are
real: ``os.mkfifo``, a bound Unix socket, links to ``/dev/zero``, link farms.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stemflow.catalogue.listing import list_audio
from stemflow.errors import StorageError
from stemflow.store.objects import read_bytes, sha256_object

LISTING = (
    "import json, sys\n"
    "from stemflow.catalogue.listing import list_audio\n"
    "urls = [t.url for t in list_audio(sys.argv[1], exclude=sys.argv[2:], workers=4)]\n"
    "print(json.dumps(urls))\n"
)


def listed(root: Path, *exclude: Path, timeout_s: float = 60.0) -> tuple[list[str], str]:
    """The URLs ``list_audio(root, exclude=…)`` yields, and its warnings, from a child process."""
    done = subprocess.run([sys.executable, "-c", LISTING, str(root), *map(str, exclude)], capture_output=True,
                          text=True, timeout=timeout_s, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def relative(urls: list[str], root: Path) -> list[str]:
    prefix = root.as_uri() + "/"
    assert all(u.startswith(prefix) for u in urls), urls
    return [u[len(prefix):] for u in urls]


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "cat" / "socket.wav"
    path.parent.mkdir(exist_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    yield path
    server.close()


def test_only_regular_files_are_entries(tmp_path: Path, unix_socket: Path) -> None:
    cat = tmp_path / "cat"
    (cat / "good.wav").write_bytes(b"RIFF-a-regular-file")
    os.mkfifo(cat / "pipe.wav")
    (cat / "zero.wav").symlink_to("/dev/zero")
    (cat / "urandom.flac").symlink_to("/dev/urandom")
    (cat / "to-pipe.mp3").symlink_to(cat / "pipe.wav")
    (cat / "dangling.wav").symlink_to(cat / "missing.wav")
    (cat / "sub").mkdir()
    os.mkfifo(cat / "sub" / "deep-pipe.flac")
    urls, warnings = listed(cat)
    assert relative(urls, cat) == ["good.wav"]
    for name, what in (("pipe.wav", "a FIFO"), ("zero.wav", "a character device"), ("socket.wav", "a socket"),
                       ("to-pipe.mp3", "a FIFO"), ("deep-pipe.flac", "a FIFO"), ("dangling.wav", "dangling")):
        assert any(name in line and what in line for line in warnings.splitlines()), (name, warnings)


def test_a_special_file_as_the_catalogue_or_an_object_is_refused_unopened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.wav")
    (tmp_path / "zero.wav").symlink_to("/dev/zero")
    for name in ("pipe.wav", "zero.wav"):
        with pytest.raises(StorageError, match="neither a folder nor a regular file"):
            list(list_audio(str(tmp_path / name)))
        with pytest.raises(StorageError, match="not a regular file"):
            read_bytes(str(tmp_path / name))  # O_NONBLOCK open + fstat: returns at once, never reads
        with pytest.raises(StorageError, match="not a regular file"):
            sha256_object(str(tmp_path / name))


def _two_links_per_folder(folder: Path, names: tuple[str, str]) -> None:
    """Folders ``names`` under ``folder``, each linking to itself and to the other."""
    first, second = folder / names[0], folder / names[1]
    for here, there in ((first, second), (second, first)):
        here.mkdir(parents=True, exist_ok=True)
        (here / "to-self").symlink_to(here)
        (here / "to-other").symlink_to(there)


def test_a_link_farm_inside_the_catalogue_lists_each_real_file_once(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    _two_links_per_folder(cat, ("d1", "d2"))
    (cat / "d1" / "a.wav").write_bytes(b"a")
    (cat / "d2" / "b.wav").write_bytes(b"b")
    (cat / "again.wav").symlink_to(cat / "d1" / "a.wav")  # a link to a file inside: listed under its own path
    (cat / "up").symlink_to(tmp_path)  # a link to an ancestor: a loop
    urls, warnings = listed(cat)
    assert relative(urls, cat) == ["d1/a.wav", "d2/b.wav"]
    assert "links back to" in warnings


def test_links_leading_outside_are_followed_once_per_real_path(tmp_path: Path) -> None:
    cat, farm = tmp_path / "cat", tmp_path / "farm"
    _two_links_per_folder(farm, ("e1", "e2"))
    (farm / "e1" / "c.wav").write_bytes(b"c")
    (farm / "e2" / "d.wav").write_bytes(b"d")
    (farm / "top.wav").write_bytes(b"top")
    cat.mkdir()
    (cat / "own.wav").write_bytes(b"own")
    (cat / "a-file.wav").symlink_to(farm / "top.wav")  # listed here; not again from inside "z"
    (cat / "b-file.wav").symlink_to(farm / "top.wav")  # the same real file: skipped
    (cat / "x").symlink_to(farm / "e1")
    (cat / "y").symlink_to(farm / "e2")
    (cat / "z").symlink_to(farm)  # its e1 and e2 were walked already: only the rest is new
    urls, _ = listed(cat)
    # y is decided with its siblings, before x is walked: e2 is reached through y, not through x/to-other
    assert relative(urls, cat) == ["a-file.wav", "own.wav", "x/c.wav", "y/d.wav"]


def test_no_link_leads_into_the_excluded_output(tmp_path: Path) -> None:
    cat, out = tmp_path / "cat", tmp_path / "out"
    stems = out / "stems" / "m" / "t"
    stems.mkdir(parents=True)
    (stems / "vocals.wav").write_bytes(b"v")
    cat.mkdir()
    (cat / "song.wav").write_bytes(b"s")
    (cat / "stems-link").symlink_to(out / "stems")
    (cat / "vocals-link.wav").symlink_to(stems / "vocals.wav")
    urls, warnings = listed(cat, out)
    assert relative(urls, cat) == ["song.wav"]
    assert warnings.count("excluded folder") == 2

    # the output inside the catalogue, excluded under another spelling (a link to it): compared by real path
    inner = cat / "out"
    (inner / "stems").mkdir(parents=True)
    (inner / "stems" / "x.wav").write_bytes(b"x")
    alias = tmp_path / "alias"
    alias.symlink_to(inner)
    urls, _ = listed(cat, out, alias)
    assert relative(urls, cat) == ["song.wav"]
