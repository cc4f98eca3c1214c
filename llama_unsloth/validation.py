"""Range checks for option dataclasses, run in their ``__post_init__`` (PEFT's habit): one message per bad value.

The message names the command-line flag (``--learning-rate``), the allowed range and the value given,
so the recipes print it as the one error line. Python callers see the same text in the
:class:`~llama_unsloth.errors.OptionError` (a ``ValueError``).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from llama_unsloth.errors import OptionError


def flag_name(name: str) -> str:
    """``chunk_size`` -> ``--chunk-size`` (a name that already starts with ``--`` is kept)."""
    return name if name.startswith("--") else "--" + name.replace("_", "-")


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_range(
    name: str,
    value: Any,
    *,
    min: Optional[float] = None,  # noqa: A002 - the words the message uses
    max: Optional[float] = None,  # noqa: A002
    gt: Optional[float] = None,
    lt: Optional[float] = None,
    also: Iterable[Any] = (),
) -> None:
    """Checks a number against inclusive ``min``/``max`` and exclusive ``gt``/``lt`` bounds; ``None`` (unset) passes.

    Args:
        name: Field or flag name (``learning_rate`` or ``--learning-rate``).
        value: The value to check.
        min: Smallest allowed value.
        max: Largest allowed value.
        gt: The value must be above this.
        lt: The value must be below this.
        also: Values allowed outside the range (``-1`` for "no limit").

    Raises:
        OptionError: ``--flag must be >= 1 (or -1); got 0.``
    """
    if value is None:
        return
    flag, also = flag_name(name), list(also)
    if value in also and not isinstance(value, bool):
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise OptionError(f"{flag} must be a number; got {value!r}.")
    bounds, ok = [], True
    for word, bound, passes in (
        (">=", min, lambda b: value >= b),
        (">", gt, lambda b: value > b),
        ("<=", max, lambda b: value <= b),
        ("<", lt, lambda b: value < b),
    ):
        if bound is not None:
            bounds.append(f"{word} {_fmt(bound)}")
            ok &= passes(bound)
    if not ok:
        allowed = " and ".join(bounds) + (f" (or {', '.join(map(_fmt, also))})" if also else "")
        raise OptionError(f"{flag} must be {allowed}; got {_fmt(value)}.")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Checks ``value`` is one of ``choices`` (for values the parser cannot check: Python callers, config files).

    Raises:
        OptionError: ``--flag must be one of a, b; got 'c'.``
    """
    choices = list(choices)
    if value is not None and value not in choices:
        raise OptionError(f"{flag_name(name)} must be one of {', '.join(map(str, choices))}; got {value!r}.")


def check_output_location(path: Union[str, Path], name: str, folder: bool = False) -> None:
    """Checks that ``path`` can be written, before any work: its answers or model must not be lost at the end.

    Nothing is created: the nearest existing folder is probed with a temporary file, removed at once.

    Args:
        path: The file (``folder=False``) or folder to be written; it need not exist yet.
        name: The flag that gave it (``--out``, ``--output_dir``), for the message.
        folder: Whether ``path`` is a folder (a regular file there is then an error too).

    Raises:
        OptionError: One line: ``path`` lies inside a regular file, is a file where a folder belongs (or the
            reverse), or its folder is read-only.
    """
    target = Path(path).expanduser()
    if target.exists() and folder and not target.is_dir():
        raise OptionError(f"{name} {path} is a file, not a folder: choose a folder path.")
    if target.exists() and not folder and target.is_dir():
        raise OptionError(f"{name} {path} is a folder, not a file: give a file path inside it.")
    # An existing file to be replaced is probed in its folder (it does not lie inside itself).
    existing = target if target.is_dir() else target.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OptionError(f"{name} {path} lies inside {existing}, which is a file, not a folder: choose another path.")
    probe_in = target if target.is_dir() else existing
    try:
        handle, probe = tempfile.mkstemp(prefix=".llama-unsloth-write-check-", dir=probe_in)
    except OSError as err:
        raise OptionError(
            f"{name} {path} cannot be written: {probe_in} is read-only ({err.strerror}). Choose a writable location."
        ) from None
    os.close(handle)
    os.unlink(probe)
    if target.is_file() and not os.access(target, os.W_OK):
        raise OptionError(f"{name} {path} cannot be written: the file is read-only. Choose a writable location.")


__all__ = ["check_choice", "check_output_location", "check_range", "flag_name"]
