"""Other names of registry models: the checkpoint file names UVR and audio-separator users type.

Users of the community tools know a model by its checkpoint file
(``model_bs_roformer_ep_317_sdr_12.9755.ckpt``) or by Spleeter's
``spleeter:2stems``, not by stemflow's registry name. A name resolves to an
entry when it equals, ignoring case,

* the registry name;
* one of the entry's explicit ``aliases`` (registry.yaml: names other tools use,
  e.g. audio-separator's file name for the same weights);
* the entry's checkpoint ``filename``, with or without its extension (derived aliases).

Config file names are not aliases: a ``.yaml`` is a path to a community config
everywhere else (``--config``, the flows' ``model``). An explicit alias naming
two entries, or shadowing another entry's name, is a :class:`ConfigError`
when the registry loads. A derived alias shared by two entries (two
checkpoints published under one generic file name, e.g. ``model.ckpt``) is
*ambiguous*: looking it up raises :class:`AmbiguousModelError` listing both. The registry name always
goes into ``model_id``, so a model run under any of its names writes to the
same place.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Protocol

from stemflow.errors import ConfigError


class UnknownModelError(ConfigError):
    """A model name that the registry does not know; the message lists the valid names."""


class AmbiguousModelError(UnknownModelError):
    """A name that is an alias of several registry models; the message lists them."""


class NamedEntry(Protocol):
    """What an alias index needs of a registry entry."""

    name: str
    aliases: tuple[str, ...]
    filename: str | None


def derived_aliases(entry: NamedEntry) -> tuple[str, ...]:
    """The checkpoint file name of ``entry``, with and without its extension."""
    names = []
    if entry.filename:
        names += [entry.filename, PurePosixPath(entry.filename).stem]
    return tuple(dict.fromkeys(n for n in names if n and n != entry.name))


def known_as(entry: NamedEntry) -> tuple[str, ...]:
    """Every other name ``entry`` answers to: explicit aliases first, then the derived ones."""
    return tuple(dict.fromkeys((*entry.aliases, *derived_aliases(entry))))


def build_index(entries: Iterable[NamedEntry], *, source: object) -> Mapping[str, tuple[str, ...]]:
    """Case-folded name or alias -> the registry names it designates (more than one: ambiguous).

    Raises:
        ConfigError: an explicit alias that is another entry's name or another entry's explicit alias.
    """
    entries = list(entries)
    names = {e.name.casefold(): e.name for e in entries}
    explicit: dict[str, str] = {}
    for entry in entries:
        for alias in entry.aliases:
            key = alias.casefold()
            owner = names.get(key, explicit.get(key))
            if owner is not None and owner != entry.name:
                raise ConfigError(f"{source}: alias {alias!r} of {entry.name!r} already names {owner!r}")
            explicit[key] = entry.name
    index: dict[str, list[str]] = {key: [name] for key, name in {**explicit, **names}.items()}
    for entry in entries:
        for alias in derived_aliases(entry):
            key = alias.casefold()
            if key in names or key in explicit:  # a name or an explicit alias wins over a derived one
                continue
            targets = index.setdefault(key, [])
            if entry.name not in targets:
                targets.append(entry.name)
    return MappingProxyType({key: tuple(value) for key, value in index.items()})


def resolve_name(name: str, index: Mapping[str, tuple[str, ...]], valid: Iterable[str], *, source: object) -> str:
    """The registry name that ``name`` designates.

    Raises:
        AmbiguousModelError: ``name`` is an alias of several models (they are listed).
        UnknownModelError: no model answers to ``name``; the message lists the valid names and close matches.
    """
    targets = index.get(name.strip().casefold(), ()) if isinstance(name, str) else ()
    if len(targets) == 1:
        return targets[0]
    if len(targets) > 1:
        raise AmbiguousModelError(f"model name {name!r} is ambiguous: it names {', '.join(targets)}; use one of these")
    valid = list(valid)
    close = difflib.get_close_matches(str(name).casefold(), list(index), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(sorted({t for c in close for t in index[c]}))}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}{hint} The registry {source} lists: {', '.join(valid) or '(none)'} "
        "(checkpoint file names work too: `stemflow models list` shows them)"
    )
