"""Masking secrets out of settings before they are written anywhere: outputs, logs, Prefect.

Run settings travel far: the run manifest (``runs/<run_id>.json``), evaluation
and dataset descriptions, log lines, Prefect parameters and artifacts. Some of
them hold secrets: ``storage_options`` may carry ``key``/``secret``/``token``, a
Ray ``runtime_env`` carries ``env_vars`` (``AWS_SECRET_ACCESS_KEY``,
``HF_TOKEN``…), an HTTP header ``Authorization``, a URL ``user:password@host``.
:func:`redact` returns a copy in which each of those values is replaced by
:data:`REDACTED`, at any depth, so a caller writes what it has without having to
know where secrets hide. Keys are kept (a reader still sees *that* a credential
was set), values never are.

What is masked:

* the value of every key that names a secret: the key split into words (at
  ``_``, ``-``, ``.``, spaces and camelCase humps) contains one of
  :data:`SECRET_WORDS` (``key``, ``secret``, ``token``, ``password``,
  ``credential``, ``auth``…), or the key starts with ``aws_`` (any AWS
  setting: ``aws_access_key_id``, ``AWS_SESSION_TOKEN``, ``aws_profile``);
* every value under :data:`OPAQUE_KEYS` (``env_vars``, ``headers``…): environment
  variables and headers hold secrets under any name (``DATABASE_URL``);
* inside every string: the password of a URL's ``user:password@`` and anything
  shaped like an AWS access key id (``AKIA…``/``ASIA…``).

Everything else is copied unchanged; mappings become dicts, lists and tuples
lists. The input is never modified.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***redacted***"
"""What a secret value becomes."""

SECRET_WORDS = frozenset({
    "key", "secret", "secrets", "token", "password", "passwd", "passphrase", "pwd",
    "credential", "credentials", "creds", "auth", "authorization", "bearer", "apikey", "signature",
    "cookie", "session", "private", "cert", "certificate", "sas", "dsn",
})
"""Words that make a key's value secret (compared in lower case, as whole words of the key)."""

OPAQUE_KEYS = frozenset({"env_vars", "env", "environment", "headers", "extra_headers", "secrets"})
"""Keys whose every value (at any depth below) is masked, whatever its own key."""

_WORD_BREAK = re.compile(r"[_\-.\s/:]+|(?<=[a-z0-9])(?=[A-Z])")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)(?P<password>[^@/\s]+)(?P<at>@)")
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA)[A-Z0-9]{16}\b")


def is_secret_key(key: object) -> bool:
    """Whether a mapping key names a secret (see the module docstring)."""
    if not isinstance(key, str):
        return False
    if key.lower().startswith("aws_"):
        return True
    return any(word.lower() in SECRET_WORDS for word in _WORD_BREAK.split(key) if word)


def redact_text(text: str) -> str:
    """``text`` with URL passwords and AWS access key ids masked."""
    masked = _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}{m['at']}", text)
    return _AWS_KEY_ID.sub(REDACTED, masked)


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret masked (see the module docstring); never raises."""
    return _redact(value, opaque=False, depth=0)


_MAX_DEPTH = 64  # deeper structures are not settings; masked whole rather than walked


def _redact(value: Any, *, opaque: bool, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        copied = {}
        for key, item in value.items():
            hidden = opaque or is_secret_key(key)
            inner_opaque = opaque or (isinstance(key, str) and key.lower() in OPAQUE_KEYS)
            if hidden and not isinstance(item, (Mapping, list, tuple)):
                copied[key] = REDACTED if item is not None else None
            else:
                copied[key] = _redact(item, opaque=inner_opaque or hidden, depth=depth + 1)
        return copied
    if isinstance(value, (list, tuple)):
        return [_redact(item, opaque=opaque, depth=depth + 1) for item in value]
    if opaque:
        return REDACTED if value is not None else None
    if isinstance(value, str):
        return redact_text(value)
    return value
