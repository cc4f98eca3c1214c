"""Batch answering through the ``batch`` recipe: ``--batch-size 8`` against 1 on the same questions.

Answers/s is the number of answers over the generation time the recipe records per answer (the ``seconds``
column; model loading excluded). Both runs use greedy decoding; the report counts how many answers are
identical. Bar: at least 5x answers/s with ``--batch-size 8``.

Commands (GPU machine, random-weight checkpoint; ``--no-rag`` so no Chroma index is needed there)::

    python -m benchmarks.batch_speedup --model /tmp/m1b --questions 64 --out $OUT/batch_1b.json
    .venv/bin/python -m benchmarks.batch_speedup --questions 16 --max-new-tokens 32     # CPU, SmolLM2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.common import machine, print_table, write_json
from benchmarks.rag_latency import questions


def run_batch(
    model: Optional[str], questions_file: Path, out: Path, batch_size: int, max_new_tokens: int
) -> Dict[str, Any]:
    """Runs the batch recipe in a fresh process and reads its JSONL."""
    command = [
        sys.executable,
        "-m",
        "recipes.batch",
        "--questions",
        str(questions_file),
        "--no-rag",
        "--out",
        str(out),
        "--batch-size",
        str(batch_size),
        "--max-new-tokens",
        str(max_new_tokens),
        "--no-progress",
        "--prompt-format",
        "alpaca",
    ]
    if model:
        command += ["--model", model]
    began = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - began
    records = [
        json.loads(line) for line in out.with_suffix(".jsonl").read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    generation = sum(float(r["seconds"]) for r in records)
    return {"records": records, "wall_s": wall, "generation_s": generation}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Runs the recipe at both batch sizes, prints the comparison and writes JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder or hub id (default: offline SmolLM2)")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    questions_file = work / "questions.txt"
    questions_file.write_text("\n".join(questions(args.questions)) + "\n", encoding="utf-8")
    runs: Dict[int, Dict[str, Any]] = {}
    for size in (int(s) for s in args.batch_sizes.split(",")):
        runs[size] = run_batch(args.model, questions_file, work / f"answers_bs{size}", size, args.max_new_tokens)
    base_size = min(runs)
    base = runs[base_size]
    rows: List[Dict[str, Any]] = []
    for size, run in sorted(runs.items()):
        same = sum(a["answer"] == b["answer"] for a, b in zip(base["records"], run["records"]))
        rows.append(
            {
                "batch_size": size,
                "answers": len(run["records"]),
                "generation_s": run["generation_s"],
                "answers_per_s": len(run["records"]) / run["generation_s"],
                "speedup": base["generation_s"] / run["generation_s"],
                f"identical_to_bs{base_size}": f"{same}/{len(run['records'])}",
                "wall_s_incl_load": run["wall_s"],
            }
        )
    result = {
        "model": args.model or "offline SmolLM2",
        "max_new_tokens": args.max_new_tokens,
        "machine": machine(),
        "rows": rows,
    }
    print_table(rows)
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
