"""Wall time of the whole `make demo` on an existing .venv.

`make demo` runs ``$(PY) -m recipes.demo`` once the virtual environment is installed. This runs that same
command (``<this python> -m recipes.demo --out-dir <fresh temporary folder>``) in a subprocess with the
Makefile's offline environment, ``--runs`` times, and times each run from start to exit: index the sample
corpus, load SmolLM2 and MiniLM, one POV-reranked query, the batch of questions with and without RAG and
the comparison. Every run gets a fresh output folder, so none reuses an earlier run's index. Not included:
creating the .venv and installing packages (the first `make demo` in a fresh clone does that too).

``--commit REV`` runs the demo from a ``git archive REV`` export of the repository (in a temporary folder,
with the same .venv), so the time belongs to committed code even while the working tree is being edited;
without it the demo runs from the working tree. The JSON is written only if every run succeeded.

Command (from the repository root)::

    .venv/bin/python -m benchmarks.demo_time --runs 2 --commit HEAD --out benchmarks/results/cpu_demo_time.json
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.common import loadavg, machine, print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
# What the Makefile exports for every target.
MAKE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "ANONYMIZED_TELEMETRY": "False",
}


def export_commit(rev: str, target: str) -> str:
    """Writes the files of commit ``rev`` into ``target`` (``git archive``) and returns the full commit id."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", rev + "^{commit}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", target], input=archive, check=True)
    return commit


def run_demo(extra: Sequence[str] = (), source: Path = ROOT) -> Dict[str, Any]:
    """One ``python -m recipes.demo`` in a subprocess run from ``source``, in a fresh output folder; its seconds and exit code."""
    env = dict(os.environ)
    for key, value in MAKE_ENV.items():
        env.setdefault(key, value)
    with tempfile.TemporaryDirectory(prefix="demo-time-") as out_dir:
        command = [sys.executable, "-m", "recipes.demo", "--out-dir", out_dir, *extra]
        load_before = loadavg()
        started = time.perf_counter()
        proc = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
    # The demo prints its own time from after option parsing ("Demo finished in N s."): no interpreter start.
    reported = re.search(r"Demo finished in (\d+) s", proc.stdout)
    return {
        "seconds": seconds,
        "demo_reported_s": int(reported.group(1)) if reported else None,
        "returncode": proc.returncode,
        "load_average_before": load_before,
        "load_average_after": loadavg(),
        "stdout_tail": proc.stdout[-1500:],
        "stderr_tail": proc.stderr[-1500:] if proc.returncode else "",
    }


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Times ``--runs`` demo runs, prints a table, writes JSON; exits 1 if a run failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="demo runs, one after another")
    parser.add_argument("--out", default=None, help="write the results as JSON here (only if every run succeeded)")
    parser.add_argument(
        "--commit", default=None, help="run the demo from a git archive of this commit (default: the working tree)"
    )
    parser.add_argument("demo_args", nargs="*", help="passed on to recipes.demo (after --)")
    args = parser.parse_args(argv)

    runs: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="demo-src-") as export:
        source, commit = ROOT, None
        if args.commit:
            commit = export_commit(args.commit, export)
            source = Path(export)
        for number in range(1, args.runs + 1):
            run = run_demo(args.demo_args, source)
            run["run"] = number
            runs.append(run)
            print(
                f"run {number}: {run['seconds']:.1f} s, exit {run['returncode']}, load {run['load_average_before']} -> {run['load_average_after']}"
            )
    ok = [r["seconds"] for r in runs if r["returncode"] == 0]
    result = {
        "benchmark": "demo_time",
        "command": "python -m benchmarks.demo_time " + " ".join(argv if argv is not None else sys.argv[1:]),
        "demo_command": f"{sys.executable} -m recipes.demo --out-dir <fresh temporary folder> "
        + " ".join(args.demo_args),
        # Which code the demo ran: an exported commit, or the working tree (see "code" for its commit).
        "demo_source": {"commit": commit} if commit else "working tree",
        "machine": machine(),
        "runs": runs,
        "seconds_median": statistics.median(ok) if ok else None,
        "seconds_min": min(ok) if ok else None,
        "seconds_max": max(ok) if ok else None,
        "all_succeeded": len(ok) == len(runs),
    }
    print_table(
        [
            {
                k: r[k]
                for k in (
                    "run",
                    "seconds",
                    "demo_reported_s",
                    "returncode",
                    "load_average_before",
                    "load_average_after",
                )
            }
            for r in runs
        ]
    )
    if result["all_succeeded"]:
        write_json(result, args.out)
    else:
        failed = next(r for r in runs if r["returncode"] != 0)
        print(failed["stdout_tail"] + failed["stderr_tail"], file=sys.stderr)
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    main()
