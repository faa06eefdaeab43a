"""Where a catalogue manifest's rows may point: the catalogue's own location, unless allowed otherwise.

A manifest is data someone else wrote. Its ``url`` column could name
``/etc/passwd``, another team's bucket, ``s3://cat/../other`` or an
``http://`` server inside the network. :class:`SourcePolicy` resolves each
row's URL and refuses, with the reason, anything outside the catalogue's own
location:

- the location is the manifest's **bucket** on an object store
  (``s3://label-catalogue/…`` may list any key of ``label-catalogue``) and the
  manifest's **folder** on a local disk or ``memory://`` (relative paths);
- refused: absolute local paths and ``file://`` URLs outside the manifest's
  folder, other buckets or protocols, ``http(s)://`` and ``ftp://`` URLs, any
  ``.`` or ``..`` path component (HTTP clients and local paths would resolve it
  to another object), empty URLs;
- ``allowed``: extra URL prefixes the user allows explicitly (e.g.
  ``s3://archive-bucket/``, ``/mnt/audio/``), or ``"*"`` for anything.

A refused row becomes an error row (``error_type="source"``), never a read.
Resolution is string work on the common spellings (``s3://`` and relative
keys), so a 10-million-row manifest resolves in seconds; other spellings go
through fsspec's normalisation (:func:`stemflow.store.paths.normalise_url`),
which gives the same canonical URL that track ids are built from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stemflow.errors import StorageError
from stemflow.store.paths import StorageOptions, normalise_url

ALLOW_ANY = "*"
"""The ``allowed`` value that lets rows name any URL (``..`` components included)."""

_REMOTE_ONLY = ("http://", "https://", "ftp://", "sftp://")
_FAST_PROTOCOLS = ("s3://", "memory://")


class SourceRefused(StorageError):
    """A manifest row names a source outside what the policy allows (the message says why)."""


@dataclass(frozen=True)
class SourcePolicy:
    """The location rows may name (``root_url``, normalised, no trailing ``/``) and the explicit extras."""

    root_url: str
    folder_url: str
    allowed: tuple[str, ...] = ()

    @classmethod
    def for_manifest(cls, manifest_url: str, allowed: Sequence[str] = (), *,
                     storage_options: StorageOptions = None) -> SourcePolicy:
        """The policy of a manifest: its bucket (object stores) or folder (local, memory) plus ``allowed``."""
        normalised = normalise_url(manifest_url, storage_options)
        folder = normalised.rsplit("/", 1)[0]
        protocol, _, rest = normalised.partition("://")
        if protocol in ("file", "memory", "local"):
            root = folder
        else:
            root = f"{protocol}://{rest.lstrip('/').split('/', 1)[0]}"
        extras = tuple(a if a == ALLOW_ANY else _normalise_prefix(a, storage_options) for a in allowed)
        return cls(root_url=root, folder_url=folder, allowed=extras)

    def resolve(self, value: object, storage_options: StorageOptions = None) -> str:
        """The normalised URL of one row's ``url`` value.

        Raises:
            SourceRefused: the row names something outside the policy (the message says what and why).
        """
        if not isinstance(value, str) or not value.strip():
            raise SourceRefused(f"the url {value!r} is empty or not text")
        any_allowed = ALLOW_ANY in self.allowed
        if not any_allowed and value.lower().startswith(_REMOTE_ONLY):
            raise SourceRefused(f"{value!r}: http(s)/ftp URLs are not read unless allowed explicitly")
        relative = "://" not in value and not value.startswith(("/", "\\")) and not _is_drive(value)
        if not any_allowed:
            _check_components(value.split("://", 1)[-1] if not relative else value, value)
        url = self._normalise(value, relative, storage_options)
        if any_allowed or url.startswith(self.root_url + "/"):
            return url
        if any(url.startswith(prefix) for prefix in self.allowed):
            return url
        raise SourceRefused(f"{value!r} is outside the catalogue's location {self.root_url}/ "
                            "(allow other locations explicitly with allow_sources)")

    def fast_prefixes(self) -> list[str]:
        """The S3 folder prefixes rows may name whose canonical URL is their own spelling (column-wise path)."""
        if ALLOW_ANY in self.allowed:
            return []
        roots = [self.root_url + "/"] + [a for a in self.allowed if a.endswith("/")]
        return [r for r in roots if r.startswith("s3://") and "/./" not in r and "/../" not in r]

    def _normalise(self, value: str, relative: bool, storage_options: StorageOptions) -> str:
        if relative:
            joined = f"{self.folder_url}/{value}"
            if self.folder_url.startswith(_FAST_PROTOCOLS):
                return joined.rstrip("/")
            value = joined
        elif value.startswith(_FAST_PROTOCOLS):
            protocol, _, rest = value.partition("://")
            return f"{protocol}://{('/' if protocol == 'memory' else '')}{rest.lstrip('/')}".rstrip("/")
        try:
            return normalise_url(value, storage_options)
        except StorageError as e:
            raise SourceRefused(f"{value!r}: {e}") from e


def _normalise_prefix(prefix: str, storage_options: StorageOptions) -> str:
    """An allowed prefix in the canonical spelling, keeping a trailing ``/`` (a folder, not a name prefix)."""
    folder = prefix.endswith("/")
    url = normalise_url(prefix, storage_options).rstrip("/")
    return url + "/" if folder else url


def _check_components(path: str, value: str) -> None:
    for component in path.replace("\\", "/").split("/")[1:] if path.startswith("/") else path.split("/"):
        if component in (".", ".."):
            raise SourceRefused(f"{value!r}: a {component!r} path component is never read "
                                "(it would resolve to another object)")


def _is_drive(value: str) -> bool:
    """A Windows drive path such as ``C:\\x`` or ``C:/x``."""
    return len(value) > 2 and value[1] == ":" and value[0].isalpha() and value[2] in "\\/"
