"""Where ``stemflow separate`` writes: one result per input under ``-o``, never over another track's or model's stems.

Paths come from a filename template (``--filename``, default
:data:`DEFAULT_TEMPLATE` = ``{track}/{stem}.{ext}``, demucs' layout) with the
fields ``{track}`` (the input's name), ``{stem}``, ``{ext}`` and ``{model}``
(the registry name). Every field value is made one safe path component
(:func:`safe_component`: no separators, no leading dot, no control
characters, at most :data:`MAX_COMPONENT_BYTES` bytes), and the template
itself must be relative, without ``..``, and name ``{track}`` and ``{stem}``;
so every file lands under ``-o``.

Each written stem gets a small owner record beside it,
``.<file name>.stemflow.json`` (the input's resolved path and sha256, the
model), written after the stem. :func:`plan_results` uses them to decide, per
input, which ``{track}`` name it gets:

* its own name when none of its files exist, or when they belong to the same
  input (same resolved path or same content) and the same model: a re-run
  replaces them;
* else ``<name>-2``, ``<name>-3``... (another input of this run or of an
  earlier one has that name, a file there has no owner record, or a path
  would leave ``-o`` through a symlink);
* the same input with *another* model is a :class:`ResultConflict`: the
  command refuses before separating and suggests ``{model}`` in the template.
"""

from __future__ import annotations

import hashlib
import json
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from stemflow.errors import ConfigError
from stemflow.files import sha256_file, write_file_atomic

DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"
TEMPLATE_FIELDS = frozenset({"track", "stem", "ext", "model"})
MAX_COMPONENT_BYTES = 150
"""Longest field value in bytes (file systems allow 255 per component; room for suffixes and extensions)."""
OWNER_SUFFIX = ".stemflow.json"
_MULTI_SUFFIXES = (".stem.mp4", ".stem.m4a")


class ResultConflict(ConfigError):
    """An input's results exist under ``-o`` from another model; the message says how to keep both."""


def safe_component(name: str, *, fallback: str = "track") -> str:
    """``name`` as one safe path component (see the module docstring); ``fallback`` when nothing is left."""
    text = unicodedata.normalize("NFC", name)
    text = "".join("_" if ch in "/\\" or unicodedata.category(ch) in ("Cc", "Cf", "Cs") else ch for ch in text)
    text = text.strip().rstrip(". ")
    if text.startswith("."):
        text = "_" + text.lstrip(".")
    if not text:
        return fallback
    encoded = text.encode("utf-8")
    if len(encoded) > MAX_COMPONENT_BYTES:
        digest = hashlib.sha256(encoded).hexdigest()[:8]
        text = encoded[: MAX_COMPONENT_BYTES - 9].decode("utf-8", errors="ignore").rstrip(". ") + "-" + digest
    return text


def track_name(path: Path) -> str:
    """The ``{track}`` of an input file: its safe name without the audio extension."""
    name = path.name
    for suffix in _MULTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return safe_component(name[: -len(suffix)])
    return safe_component(path.stem if path.suffix else name)


@dataclass(frozen=True)
class FilenameTemplate:
    """A validated ``--filename`` template; :meth:`render` gives a path relative to ``-o``."""

    text: str

    @classmethod
    def parse(cls, text: str) -> FilenameTemplate:
        """Check a template (fields, relative, no ``..``); ``.{ext}`` is appended when it has no ``{ext}``.

        Raises:
            ConfigError: naming what is wrong with it.
        """
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as e:
            raise ConfigError(f"--filename {text!r}: {e}") from e
        fields = {name for _, name, _, _ in parts if name is not None}
        if any(spec or conversion for _, name, spec, conversion in parts if name is not None):
            raise ConfigError(f"--filename {text!r}: fields take no format spec or conversion")
        unknown = fields - TEMPLATE_FIELDS
        if unknown or not {"track", "stem"} <= fields:
            raise ConfigError(f"--filename {text!r}: fields must include {{track}} and {{stem}} and be among "
                              f"{', '.join(f'{{{f}}}' for f in sorted(TEMPLATE_FIELDS))}")
        path = PurePosixPath(text if "ext" in fields else f"{text}.{{ext}}")
        if text.startswith(("/", "\\")) or "\\" in text or any(p in ("", ".", "..") for p in text.split("/")):
            raise ConfigError(f"--filename {text!r}: must be a relative path without '.', '..' or empty parts")
        return cls(str(path))

    def render(self, *, track: str, stem: str, ext: str, model: str) -> PurePosixPath:
        """The relative path of one stem; every value made a safe component first."""
        values = {"track": track, "stem": safe_component(stem, fallback="stem"),
                  "ext": safe_component(ext, fallback="audio"), "model": safe_component(model, fallback="model")}
        return PurePosixPath(self.text.format(**values))


@dataclass(frozen=True)
class Owner:
    """Who wrote a stem file: the input (resolved path, sha256) and the model."""

    source: str
    source_sha256: str
    model: str

    def to_json(self) -> bytes:
        return json.dumps({"source": self.source, "source_sha256": self.source_sha256, "model": self.model},
                          ensure_ascii=False, sort_keys=True).encode()


def owner_path(file: Path) -> Path:
    """The owner record of a stem file: ``.<name>.stemflow.json`` beside it."""
    return file.with_name(f".{file.name}{OWNER_SUFFIX}")


def read_owner(file: Path) -> Owner | None:
    """The owner record of ``file``, ``None`` when it is missing or unreadable (an unknown file)."""
    try:
        data = json.loads(owner_path(file).read_text(encoding="utf-8"))
        return Owner(str(data["source"]), str(data["source_sha256"]), str(data["model"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_owner(file: Path, owner: Owner) -> None:
    """Record ``owner`` beside ``file`` (atomically), after ``file`` is written."""
    write_file_atomic(owner_path(file), owner.to_json())


@dataclass
class Input:
    """One input of ``separate``: its path, and its identity once asked for (the sha256 is read lazily)."""

    path: Path
    resolved: str
    _sha256: str | None = field(default=None, repr=False)

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return self._sha256

    def owner(self, model: str) -> Owner:
        return Owner(self.resolved, self.sha256, model)


@dataclass(frozen=True)
class PlannedResult:
    """Where one input's stems go: its ``{track}`` name and stem name -> file; ``note`` when renamed."""

    input: Input
    name: str
    files: dict[str, Path]
    note: str = ""


@dataclass(frozen=True)
class ResultLayout:
    """The output folder, template, model name, stems and extension of one ``separate`` run.

    ``model`` fills ``{model}``; ``owner_model`` (default: ``model``) is what owner records
    compare, e.g. the name plus the weights' hash, so two checkpoints that share a file name differ.
    """

    output_dir: Path
    template: FilenameTemplate
    model: str
    stems: tuple[str, ...]
    ext: str
    owner_model: str = ""

    @property
    def owner(self) -> str:
        return self.owner_model or self.model

    def files(self, name: str) -> dict[str, Path]:
        """Stem name -> file for the ``{track}`` name ``name``."""
        return {stem: self.output_dir / self.template.render(track=name, stem=stem, ext=self.ext, model=self.model)
                for stem in self.stems}


def plan_results(inputs: Sequence[Path], layout: ResultLayout) -> list[PlannedResult]:
    """A ``{track}`` name and files for every input (see the module docstring); inputs given twice are planned once.

    Raises:
        ResultConflict: an input's files exist from another model (nothing has been written).
    """
    root = layout.output_dir.resolve()
    taken: set[str] = set()
    seen: set[str] = set()
    planned = []
    for path in inputs:
        item = Input(path, str(path.resolve()))
        if item.resolved in seen:
            continue
        seen.add(item.resolved)
        base = track_name(path)
        for count in range(1, 10_000):
            name = base if count == 1 else safe_component(f"{base}-{count}")
            if name.casefold() in taken:
                continue
            files = layout.files(name)
            if all(_free_for(item, f, layout.owner, root) for f in files.values()):
                break
        taken.add(name.casefold())
        note = "" if name == base else f"{layout.files(base)[layout.stems[0]]} is another input's: using {name}"
        planned.append(PlannedResult(item, name, files, note))
    return planned


def _free_for(item: Input, file: Path, model: str, root: Path) -> bool:
    """Whether ``item`` may write ``file``: absent, or the same input's with the same model; inside ``-o``."""
    if not file.resolve().is_relative_to(root):
        return False  # a symlink somewhere on the way leads out of -o
    if not file.exists() and not file.is_symlink():
        return True
    owner = read_owner(file)
    if owner is None or file.is_symlink() or not file.is_file():
        return False
    if owner.source != item.resolved and owner.source_sha256 != item.sha256:
        return False  # another track's stems
    if owner.model != model:
        raise ResultConflict(
            f"{file} holds stems of model {owner.model!r} for this input; to keep both, give "
            f"--filename '{{model}}/{{track}}/{{stem}}.{{ext}}' (or another -o)")
    return True
