"""Shared pieces of the benchmark scripts: machine description, timing, tables, JSON output."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple


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


def write_json(result: Dict[str, Any], path: Optional[str]) -> None:
    """Writes ``result`` as JSON to ``path`` (if given) and says where."""
    if not path:
        return
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2, default=str)
    print(f"wrote {path}")
