"""The error types stemflow raises; every one derives from :class:`StemflowError`."""

from __future__ import annotations


class StemflowError(Exception):
    """Base class of every error stemflow raises on purpose."""


class ConfigError(StemflowError):
    """A model config (YAML) is malformed, or names something unknown."""


class CheckpointError(StemflowError):
    """A checkpoint cannot be read, or its keys or shapes do not fit the model."""


class ChecksumError(StemflowError):
    """A downloaded or cached file's sha256 differs from the registry's."""


class ModelNotAvailableError(StemflowError):
    """Weights are neither cached nor downloadable (offline); says which file to place where."""


class AudioDecodeError(StemflowError):
    """An input file is empty, undecodable, or holds NaN/inf samples."""


class AudioEncodeError(StemflowError):
    """A stem could not be encoded in the requested format."""


class StorageError(StemflowError):
    """Reading from or writing to the object store failed."""
