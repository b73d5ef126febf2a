"""Names used as path parts (experiment names, task names) stay inside the folder they name a part of."""

from __future__ import annotations

import re

from loraven.errors import ConfigError

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}")


def check_name_part(value: object, key: str) -> str:
    """``value`` if it is one safe path component (letters, digits, ``._+=-``; no ``/``, no ``..``), else one error."""
    text = str(value)
    if not SAFE_NAME.fullmatch(text) or text in (".", "..") or ".." in text:
        raise ConfigError(
            f"{key}={text!r} is not a safe name: it becomes a folder name, so use letters, digits and ._+=- "
            "(no '/', no '..', at most 128 characters, starting with a letter or digit)"
        )
    return text
