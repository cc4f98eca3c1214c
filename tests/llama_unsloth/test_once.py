"""Warnings once per process: per key, thread-safe, pointing at the caller's caller; forget_warnings resets."""

from __future__ import annotations

import inspect
import logging
import threading
import warnings
from typing import List

import pytest

from llama_unsloth.once import first_time, forget_warnings, warn_once


def _library_function(key: object) -> None:
    """Stands for library code that warns on behalf of its caller."""
    warn_once(key, "fast_decode is off: no CUDA GPU.")


def test_first_time_per_key() -> None:
    key, other = object(), object()
    assert first_time(key) is True
    assert first_time(key) is False
    assert first_time(key) is False
    assert first_time(other) is True
    assert first_time(("fast_decode", "reason a")) is True
    assert first_time(("fast_decode", "reason b")) is True  # keys are compared by value
    assert first_time(("fast_decode", "reason a")) is False


def test_warn_once_warns_once_and_points_at_the_callers_line() -> None:
    key = object()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call_line = inspect.currentframe().f_lineno + 1
        _library_function(key)
        _library_function(key)
        _library_function(key)
    assert len(caught) == 1
    warning = caught[0]
    assert warning.category is RuntimeWarning and str(warning.message) == "fast_decode is off: no CUDA GPU."
    # stacklevel=3: the line that called the library function (here, in this test), not once.py or the library.
    assert (warning.filename, warning.lineno) == (__file__, call_line)


def test_warn_once_to_a_logger(caplog: pytest.LogCaptureFixture) -> None:
    key = object()
    logger = logging.getLogger("llama_unsloth.test_once")
    with caplog.at_level(logging.WARNING, logger=logger.name), warnings.catch_warnings():
        warnings.simplefilter("error")  # a logger warning is not also a Python warning
        for _ in range(3):
            warn_once(key, "Setting replaced once.", logger=logger)
    assert [r.getMessage() for r in caplog.records] == ["Setting replaced once."]
    assert caplog.records[0].levelno == logging.WARNING


def test_forget_warnings_shows_a_warning_again() -> None:
    key = object()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_once(key, "again?")
        warn_once(key, "again?")
        forget_warnings()
        warn_once(key, "again?")
    assert len(caught) == 2
    assert first_time(key) is False


def test_threads_racing_for_one_key_get_one_true() -> None:
    key = object()
    barrier = threading.Barrier(8)
    results: List[bool] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait()
        for _ in range(200):
            result = first_time(key)
            with lock:
                results.append(result)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 1600 and results.count(True) == 1
