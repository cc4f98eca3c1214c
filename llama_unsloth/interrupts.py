"""Stopping long work cleanly on Ctrl-C (SIGINT) or SIGTERM.

Inside :func:`deferred_interrupts` a signal only sets a flag; the work checks it between units it can
commit (an embedding batch, a file), so nothing is left half-written and no traceback is printed. A
second signal stops at once (``KeyboardInterrupt``), for a user who does not want to wait.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Sequence


@dataclass
class StopRequest:
    """Set by the signal handler: which signal asked the work to stop (``None``: none yet)."""

    signum: Optional[int] = None

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.signum is not None

    @property
    def name(self) -> str:
        """``SIGINT``/``SIGTERM`` (empty when none)."""
        return signal.Signals(self.signum).name if self.signum is not None else ""


@contextmanager
def deferred_interrupts(signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[StopRequest]:
    """Turns SIGINT/SIGTERM into a :class:`StopRequest` flag for the duration of the block.

    Outside the main thread (where Python cannot install handlers) the flag is never set and signals
    behave as usual.
    """
    state = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, frame: Any) -> None:
        if state.requested:
            raise KeyboardInterrupt
        state.signum = signum

    previous: Dict[int, Any] = {}
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, handler)
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises ``KeyboardInterrupt`` like Ctrl-C, so the same clean exit handles both."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


__all__ = ["StopRequest", "deferred_interrupts", "sigterm_as_keyboard_interrupt"]
