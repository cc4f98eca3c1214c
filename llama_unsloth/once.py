"""Warnings given once per process: a reason to fall back, or a setting replaced, must not repeat per question."""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any, Optional, Set

_SEEN: Set[Any] = set()
_GUARD = threading.Lock()


def first_time(key: Any) -> bool:
    """True the first time ``key`` is seen in this process, False after."""
    with _GUARD:
        if key in _SEEN:
            return False
        _SEEN.add(key)
        return True


def warn_once(key: Any, message: str, logger: Optional[logging.Logger] = None) -> None:
    """Warns about ``message`` once per ``key`` and process.

    Args:
        key: What makes two warnings the same one (e.g. ``("fast_decode", reason)``).
        message: The line to show.
        logger: Where to log it; ``None``: ``warnings.warn`` (a ``RuntimeWarning``, visible to pytest and users).
    """
    if not first_time(key):
        return
    if logger is not None:
        logger.warning(message)
    else:
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def forget_warnings() -> None:
    """Forgets every warning given (tests use it to see a warning again)."""
    with _GUARD:
        _SEEN.clear()
