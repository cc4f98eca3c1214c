"""Demo: fine-tune the offline SmolLM2-135M-Instruct on the bundled alpaca sample, then ask it questions.

```bash
make demo-finetune                  # or: python -m recipes.demo_finetune [--max-steps 30] [--output-dir ...]
```

Runs the ``finetune`` recipe (24 steps at learning rate 5e-4, batch 2 x accumulation 1, sequences up to 512 tokens, alpaca
layout) on ``llama_unsloth/data/finetune_alpaca.json`` into ``demo_output/finetune``, reloads the adapter
with ``UnslothLLM.from_finetuned`` (which reads the layout from ``prompt_format.json``) and answers a
few questions. A few minutes on a 2-core CPU; no network.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from llama_unsloth.validation import check_range

DATA = Path(__file__).resolve().parents[1] / "llama_unsloth" / "data" / "finetune_alpaca.json"

QUESTIONS = [
    ("Which treaty created Mercosur?", "Mercosur was created in 1991 by the Treaty of Asunción."),
    ("What does a customs union add to a free trade area?", ""),
    (
        "Who were the founding members of Mercosur?",
        "Argentina, Brazil, Paraguay and Uruguay founded Mercosur in 1991.",
    ),
]


@dataclass
class DemoFinetuneArguments:
    """The demo's options (everything else is the finetune recipe's, fixed for a short CPU run)."""

    output_dir: str = field(default="demo_output/finetune", metadata={"help": "Where the adapter goes."})
    max_steps: int = field(default=24, metadata={"help": "Training steps."})
    model: Optional[str] = field(
        default=None, metadata={"help": "Base model (default: the offline SmolLM2-135M-Instruct)."}
    )

    def __post_init__(self) -> None:
        check_range("max_steps", self.max_steps, min=1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Fine-tunes, reloads and answers; returns the exit code."""
    from recipes.config import make_parser, start

    (args,) = start(lambda: make_parser((DemoFinetuneArguments,), description=__doc__), argv)
    from recipes import finetune

    began = time.perf_counter()
    argv_ft: List[str] = [
        "--data",
        str(DATA),
        "--prompt-format",
        "alpaca",
        "--output-dir",
        args.output_dir,
        # The demo owns its folder: a second run replaces the first (finetune refuses that without the flag).
        "--overwrite_output_dir",
        "--max-steps",
        str(args.max_steps),
        "--per-device-train-batch-size",
        "2",
        "--gradient-accumulation-steps",
        "1",
        "--max-seq-length",
        "512",
        "--warmup-steps",
        "2",
        # A short run needs a higher rate than the notebooks' 2e-4 to learn the layout and the EOS.
        "--learning-rate",
        "5e-4",
        # Small model, short run: skip activation checkpointing (it only saves memory, at ~30% more compute).
        "--use-gradient-checkpointing",
        "false",
    ]
    if args.model:
        argv_ft += ["--model", args.model]
    import torch

    if not torch.cuda.is_available():
        argv_ft.append("--no-load-in-4bit")  # 4-bit needs CUDA; say so instead of warning about it
    code = finetune.main(argv_ft)
    trained = time.perf_counter() - began
    if code not in (0, finetune.EXIT_INTERRUPTED):
        return code

    from llama_unsloth import UnslothLLM

    llm = UnslothLLM.from_finetuned(
        args.output_dir, load_in_4bit=torch.cuda.is_available(), max_new_tokens=48, set_global_tokenizer=False
    )
    print(
        f"\nAsking the fine-tuned model ({llm.backend_name} backend, {llm.format.name!r} layout from prompt_format.json):"
    )
    for question, context in QUESTIONS:
        answer = (
            llm.complete(question)
            if not context
            else llm.complete(llm.format_prompt(question, context), formatted=True)
        )
        print(f"\nQ: {question}" + (f"\n   (context: {context})" if context else ""))
        print(f"A: {answer.text.strip()}")
    total = time.perf_counter() - began
    print(
        f"\nFine-tuning took {trained:.0f} s, everything {total:.0f} s. Adapter, train_log.json, loss.png and README.md: {args.output_dir}"
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
