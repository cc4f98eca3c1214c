"""The ``finetune`` recipe with the Unsloth backend against the same settings on transformers + PEFT + bitsandbytes.

Both runs: 4-bit NF4 base, LoRA r=16 on all seven projections, batch 2 x accumulation 4, sequences of
``--seq`` tokens (every record is longer, so each is truncated to exactly ``--seq``), adamw_8bit, bf16.
Tokens/s = 2 * 4 * seq / median step time (steps after the third); peak memory from the recipe's
``train_log.json`` (``torch.cuda.max_memory_allocated``).

Command (GPU machine; each backend runs in its own process, Unsloth must be imported first there)::

    python -m benchmarks.finetune_speed --model /tmp/m1b --steps 14 --out $OUT/finetune_1b.json
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.common import machine, print_table, write_json

WORDS = "bloc trade growth currency summit alliance market energy policy export import tariff reserve".split()


def make_dataset(path: Path, records: int, words: int) -> None:
    """Alpaca records whose answers are long enough to fill any sequence length up to ``words`` tokens."""
    rng = random.Random(0)
    data = [
        {
            "instruction": "Summarise the bloc's trade policy.",
            "input": "",
            "output": " ".join(rng.choice(WORDS) for _ in range(words)),
        }
        for _ in range(records)
    ]
    path.write_text(json.dumps(data), encoding="utf-8")


def run(backend: str, model: str, data: Path, out: Path, seq: int, steps: int, save: str) -> Dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "recipes.finetune",
        "--data",
        str(data),
        "--model",
        model,
        "--backend",
        backend,
        "--output-dir",
        str(out),
        "--max-seq-length",
        str(seq),
        "--max-steps",
        str(steps),
        "--warmup-steps",
        "2",
        "--prompt-format",
        "alpaca",
        "--save",
        save,
    ]
    subprocess.run(command, check=True)
    log = json.loads((out / "train_log.json").read_text(encoding="utf-8"))
    step = log["median_step_seconds"]
    return {
        "backend": backend,
        "median_step_s": step,
        "tokens_per_s": 2 * 4 * seq / step,
        "peak_gpu_gib": log["peak_gpu_memory_gib"],
        "final_loss": log["final_loss"],
        "saved": save,
    }


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Runs both backends, prints tokens/s and peak memory with their ratios, writes JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder (a random-weight one is fine)")
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=14)
    parser.add_argument("--backends", default="unsloth,transformers")
    parser.add_argument("--save-unsloth", default="merged_4bit", help="what the Unsloth run saves (exercises merging)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="finetune-bench-"))
    data = work / "data.json"
    make_dataset(data, records=128, words=args.seq * 2)
    rows: List[Dict[str, Any]] = []
    for backend in args.backends.split(","):
        save = args.save_unsloth if backend == "unsloth" else "lora"
        rows.append(run(backend, args.model, data, work / backend, args.seq, args.steps, save))
    if len(rows) == 2:
        rows.append(
            {
                "backend": "ratio unsloth / transformers",
                "tokens_per_s": rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"],
                "peak_gpu_gib": rows[0]["peak_gpu_gib"] / rows[1]["peak_gpu_gib"],
            }
        )
    result = {
        "model": args.model,
        "seq": args.seq,
        "steps": args.steps,
        "machine": machine(),
        "rows": rows,
        "work": str(work),
    }
    print_table(rows, ["backend", "median_step_s", "tokens_per_s", "peak_gpu_gib", "final_loss", "saved"])
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
