"""Looking up a user-given name in a catalogue (losses, optimizers, initializers, datasets)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


def did_you_mean(key: str, options: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest option, or '' when none is close."""
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(kind: str, name, valid: Iterable[str], candidates: Iterable[str] = (),
                 key: str | None = None) -> str:
    """The message for an unknown ``kind`` name (``key``: its normalised form, default the
    lower-cased name): the closest match, then every valid name."""
    valid = list(valid)
    hint = did_you_mean(str(name).lower() if key is None else key, [*valid, *candidates])
    return f"unknown {kind} {name!r}{hint}; valid names: {', '.join(valid)}"


def lookup(kind: str, name: str, catalogue: Mapping, aliases: Mapping[str, str] = {}) -> str:
    """The catalogue key for ``name`` (case-insensitive, aliases resolved), else ValueError
    naming the closest match and every valid name."""
    key = aliases.get(name.lower(), name.lower())
    if key not in catalogue:
        raise ValueError(unknown_name(kind, name, catalogue, aliases))
    return key
