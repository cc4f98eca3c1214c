"""deferred_interrupts / sigterm_as_keyboard_interrupt: a first signal is a flag, a second one stops at once,
handlers come back afterwards (also after an error), and other threads are left alone.

Every test runs under a harmless SIGINT/SIGTERM handler of its own (``safety``), so a handler that was not
installed or not restored is seen as a recorded signal instead of a killed test process.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Iterator, List

import pytest

from llama_unsloth.interrupts import StopRequest, deferred_interrupts, sigterm_as_keyboard_interrupt


@pytest.fixture
def safety() -> Iterator[List[int]]:
    """Signals that reached the handler in place before the block under test (i.e. were not deferred)."""
    received: List[int] = []

    def record(signum: int, frame: Any) -> None:
        received.append(signum)

    saved = {sig: signal.signal(sig, record) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def test_stop_request_without_a_signal() -> None:
    state = StopRequest()
    assert state.requested is False and state.name == ""
    state.signum = signal.SIGTERM
    assert state.requested is True and state.name == "SIGTERM"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_only_sets_the_flag(safety: List[int], sig: int) -> None:
    units_done = 0
    with deferred_interrupts() as stop:
        assert not stop.requested
        signal.raise_signal(sig)
        units_done += 1  # the work goes on to the end of its unit
        assert stop.requested and stop.signum == sig and stop.name == signal.Signals(sig).name
    assert units_done == 1
    assert safety == []  # the signal was the block's, not the outer handler's


def test_a_second_signal_stops_at_once(safety: List[int]) -> None:
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts() as stop:
            signal.raise_signal(signal.SIGINT)
            assert stop.requested
            signal.raise_signal(signal.SIGTERM)
            pytest.fail("the second signal did not stop the block")  # pragma: no cover
    assert stop.signum == signal.SIGINT  # the first signal is the one recorded


def test_handlers_are_restored_after_the_block_and_after_an_error(safety: List[int]) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with deferred_interrupts():
        assert signal.getsignal(signal.SIGINT) is not before[signal.SIGINT]
    assert {sig: signal.getsignal(sig) for sig in before} == before
    with pytest.raises(RuntimeError):
        with deferred_interrupts():
            raise RuntimeError("work failed")
    assert {sig: signal.getsignal(sig) for sig in before} == before
    # And the restored handler is the one that runs.
    signal.raise_signal(signal.SIGTERM)
    assert safety == [signal.SIGTERM]


def test_only_the_signals_asked_for_are_deferred(safety: List[int]) -> None:
    with deferred_interrupts(signals=(signal.SIGTERM,)) as stop:
        signal.raise_signal(signal.SIGINT)  # not deferred: the outer handler sees it
        assert not stop.requested
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.name == "SIGTERM"
    assert safety == [signal.SIGINT]


def test_outside_the_main_thread_nothing_is_installed(safety: List[int]) -> None:
    outcome: List[Any] = []

    def work() -> None:
        try:
            with deferred_interrupts() as stop:
                outcome.append(stop.requested)
            with sigterm_as_keyboard_interrupt():
                outcome.append("sigterm block ran")
        except Exception as error:  # signal.signal outside the main thread raises ValueError
            outcome.append(error)

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert outcome == [False, "sigterm block ran"]
    assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_raises_keyboard_interrupt_inside_and_is_restored_after(safety: List[int]) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_keyboard_interrupt():
            signal.raise_signal(signal.SIGTERM)
            pytest.fail("SIGTERM did not raise KeyboardInterrupt")  # pragma: no cover
    assert signal.getsignal(signal.SIGTERM) is before
    with sigterm_as_keyboard_interrupt():
        pass
    assert signal.getsignal(signal.SIGTERM) is before
    signal.raise_signal(signal.SIGTERM)
    assert safety == [signal.SIGTERM]
    # SIGINT is left as it was inside the block.
    with sigterm_as_keyboard_interrupt():
        signal.raise_signal(signal.SIGINT)
    assert safety == [signal.SIGTERM, signal.SIGINT]
