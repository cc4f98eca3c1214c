"""Shared pieces of the benchmark scripts: machine description, timing, tables, JSON output.

Every result JSON written by :func:`write_json` holds ``machine`` (CPU, cores, memory, torch and its
threads, Python, date; GPU if any) and ``load_average`` (the 1/5/15-minute load averages when this
module was imported, i.e. when the benchmark process started, and when the JSON was written), so a
figure measured on a busy machine says so.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple


def _loadavg_values() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return None


#: Load averages when the benchmark process imported this module (its start).
LOAD_AT_START: Optional[List[float]] = _loadavg_values()
_STARTED_AT = _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _memory_gib() -> Optional[float]:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (OSError, ValueError, AttributeError):  # pragma: no cover - not on every platform
        return None


def machine() -> Dict[str, Any]:
    """CPU model, core count, torch threads, GPU (if any), Python and the date, for BENCHMARKS.md."""
    cpu = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), cpu)
    except OSError:
        pass
    import torch

    info: Dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": _memory_gib(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def loadavg() -> str:
    """The 1/5/15-minute load averages, to show how busy the machine was."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def synchronize() -> None:
    """Waits for queued GPU work so wall-clock timings are honest."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> Tuple[float, Any]:
    """Runs ``fn`` and returns (seconds, result), GPU work included."""
    synchronize()
    start = time.perf_counter()
    result = fn()
    synchronize()
    return time.perf_counter() - start, result


def interleaved_medians(cases: Dict[str, Callable[[], Any]], repeats: int) -> Dict[str, float]:
    """Median seconds of each case, run in turn ``repeats`` times so all see the same machine state."""
    times: Dict[str, List[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            times[name].append(timed(fn)[0])
    return {name: statistics.median(values) for name, values in times.items()}


def print_table(rows: Sequence[Dict[str, Any]], columns: Optional[Sequence[str]] = None) -> None:
    """Prints rows as a markdown table (floats to 4 significant digits)."""
    if not rows:
        return
    columns = list(columns or rows[0].keys())

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |")


def load_average() -> Dict[str, Any]:
    """Load averages (1/5/15 min) at the start of the process and now, with both times."""
    return {
        "start": LOAD_AT_START,
        "end": _loadavg_values(),
        "started_at": _STARTED_AT,
        "ended_at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
    }


def git_state() -> Dict[str, Any]:
    """The checkout the benchmark ran from: commit and whether tracked files had uncommitted changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return {"commit": None, "dirty": None}
    return {
        "commit": commit.stdout.strip() or None,
        "dirty": bool(dirty.stdout.strip()) if commit.returncode == 0 else None,
    }


def write_json(result: Dict[str, Any], path: Optional[str]) -> None:
    """Writes ``result`` as JSON to ``path`` (if given) and says where.

    Adds ``machine`` (if the benchmark did not), ``load_average`` (start and end of the run) and
    ``code`` (git commit, uncommitted changes or not), so every result file says on what, how busy a
    machine and which code it was measured.
    """
    if not path:
        return
    result.setdefault("machine", machine())
    result["load_average"] = load_average()
    result.setdefault("code", git_state())
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2, default=str)
    print(f"wrote {path}")
