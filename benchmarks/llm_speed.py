"""Generation speed: UnslothLLM vs the raw model it wraps, and vs LlamaIndex's own HuggingFaceLLM.

Case 1 (wrapper overhead): ``UnslothLLM.complete`` against the same model's ``model.generate`` on identical
token ids, greedy, exactly ``--new-tokens`` new tokens, batch 1. Bar: at most 3% slower.

Case 2 (vs HuggingFaceLLM): ``llama-index-llms-huggingface``'s ``HuggingFaceLLM`` loading the same checkpoint
in 4-bit NF4 through transformers + bitsandbytes (in a separate process, so Unsloth's patches can't reach it),
against ``UnslothLLM`` (Unsloth backend on a GPU).
Batch 1: one ``complete`` each. Batch 8: ``UnslothLLM.complete_batch`` against eight ``HuggingFaceLLM.complete``
calls (it has no batched API). Bar: at least 2x tokens/s at both.

Run on the GPU machine (a random-weight checkpoint is fine: weights don't change speed)::

    python -m benchmarks.llm_speed --model /tmp/m1b --out $OUT/llm_speed_1b.json
    python -m benchmarks.llm_speed --model /tmp/m8b --cases 1 --repeats 3

On CPU it runs case 1 on the transformers backend (``--model`` defaults to the offline SmolLM2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.common import interleaved_medians, machine, print_table, write_json

CONTEXT = "The bloc expanded its membership and trade grew between its members. " * 50
QUESTION = "Summarise what the context says about trade between the regional blocs."


def _prompts(count: int) -> List[str]:
    from llama_unsloth.layouts import PromptFormat

    fmt = PromptFormat.get("alpaca-context")
    return [fmt.render_prompt(f"{QUESTION} (variant {i})", CONTEXT) for i in range(count)]


def wrapper_overhead(llm: Any, new_tokens: int, repeats: int, breakdown: bool) -> List[Dict[str, Any]]:
    """Case 1: the same token ids through UnslothLLM.complete and through model.generate.

    With ``breakdown`` it also times ``generate`` with transformers' own ``stop_strings`` (what the
    wrapper used before it had its own stop criterion), to show where per-token time goes.
    """
    import torch

    prompt = _prompts(1)[0]
    ids = llm._encode(prompt)
    input_ids = torch.tensor([ids], device=llm.model.device)
    attention_mask = torch.ones_like(input_ids)
    tokenizer = llm.tokenizer
    base = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "pad_token_id": tokenizer.pad_token_id,
        "use_cache": True,
    }

    def generate(**extra: Any) -> Any:
        with torch.inference_mode():
            return llm.model.generate(**base, **extra)

    cases = {
        "raw model.generate": lambda: generate(),
        "UnslothLLM.complete": lambda: llm.complete(
            prompt, formatted=True, max_new_tokens=new_tokens, min_new_tokens=new_tokens
        ),
    }
    if breakdown:
        cases["generate + transformers stop_strings"] = lambda: generate(
            stop_strings=llm.format.stop, tokenizer=tokenizer
        )
    for fn in cases.values():  # warm-up: kernels, caches
        fn()
    medians = interleaved_medians(cases, repeats)
    raw = medians["raw model.generate"]
    return [
        {
            "case": f"1 {name}",
            "prompt_tokens": len(ids),
            "new_tokens": new_tokens,
            "seconds": seconds,
            "tok_s": new_tokens / seconds,
            "vs_raw_pct": 100 * (seconds / raw - 1),
            "bar": "<= 3%" if "Unsloth" in name else "",
        }
        for name, seconds in medians.items()
    ]


def huggingface_llm_seconds(model_name: str, new_tokens: int, repeats: int) -> Dict[str, float]:
    """Median seconds of HuggingFaceLLM (transformers + bitsandbytes NF4) for 1 and for 8 prompts.

    Runs in its own process (``--huggingface-only``): once unsloth is imported it patches transformers'
    model classes, which would make this baseline use Unsloth's kernels.
    """
    import torch
    from llama_index.llms.huggingface import HuggingFaceLLM
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    hf_llm = HuggingFaceLLM(
        model_name=model_name,
        tokenizer_name=model_name,
        context_window=2048,
        max_new_tokens=new_tokens,
        device_map="cuda:0",
        model_kwargs={"quantization_config": quantization, "dtype": torch.bfloat16},
        generate_kwargs={"do_sample": False, "min_new_tokens": new_tokens},
        is_chat_model=False,
    )
    prompts = _prompts(8)
    hf_llm.complete(prompts[0], formatted=True)  # warm-up
    return interleaved_medians(
        {
            "batch 1": lambda: hf_llm.complete(prompts[0], formatted=True),
            # HuggingFaceLLM has no batched API: eight prompts are eight calls.
            "batch 8": lambda: [hf_llm.complete(p, formatted=True) for p in prompts],
        },
        repeats,
    )


def versus_huggingface_llm(llm: Any, model_name: str, new_tokens: int, repeats: int) -> List[Dict[str, Any]]:
    """Case 2: tokens/s of UnslothLLM and HuggingFaceLLM (4-bit NF4) at batch 1 and 8."""
    prompts = _prompts(8)

    def ours(count: int) -> Any:
        return llm.complete_batch(
            prompts[:count], batch_size=count, formatted=True, max_new_tokens=new_tokens, min_new_tokens=new_tokens
        )

    ours(1)
    ours(8)
    mine = interleaved_medians({"batch 1": lambda: ours(1), "batch 8": lambda: ours(8)}, repeats)
    with tempfile.NamedTemporaryFile(suffix=".json") as handle:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.llm_speed",
                "--huggingface-only",
                "--model",
                model_name,
                "--new-tokens",
                str(new_tokens),
                "--compare-repeats",
                str(repeats),
                "--out",
                handle.name,
            ],
            check=True,
        )
        theirs = json.loads(Path(handle.name).read_text(encoding="utf-8"))["huggingface_seconds"]
    rows = []
    for label, count in (("batch 1", 1), ("batch 8", 8)):
        tokens = count * new_tokens
        rows.append(
            {
                "case": f"2 vs HuggingFaceLLM, {label}",
                "unslothllm_tok_s": tokens / mine[label],
                "huggingfacellm_tok_s": tokens / theirs[label],
                "ratio": theirs[label] / mine[label],
                "bar": ">= 2x",
            }
        )
    return rows


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Runs the chosen cases, prints a table and writes JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint folder or hub id (default: offline SmolLM2)")
    parser.add_argument("--cases", default="1,2", help="comma-separated: 1 (wrapper overhead), 2 (vs HuggingFaceLLM)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case-1 measurement")
    parser.add_argument(
        "--compare-repeats", type=int, default=2, help="timed runs per case-2 measurement (HuggingFaceLLM is slow)"
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="case 1: also time generate with transformers' stop_strings"
    )
    parser.add_argument("--huggingface-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.huggingface_only:
        result = {"huggingface_seconds": huggingface_llm_seconds(args.model, args.new_tokens, args.compare_repeats)}
        write_json(result, args.out)
        return result

    import torch

    from llama_unsloth import UnslothLLM

    on_gpu = torch.cuda.is_available()
    llm = UnslothLLM(
        model_name=args.model,
        backend="auto",
        load_in_4bit=on_gpu,
        prompt_format="alpaca-context",
        max_seq_length=2048,
        max_new_tokens=args.new_tokens,
    )
    cases = {c.strip() for c in args.cases.split(",")}
    rows: List[Dict[str, Any]] = []
    if "1" in cases:
        rows.extend(wrapper_overhead(llm, args.new_tokens, args.repeats, args.breakdown))
    if "2" in cases and on_gpu:
        rows.extend(versus_huggingface_llm(llm, args.model, args.new_tokens, args.compare_repeats))
    result = {"model": llm.metadata.model_name, "backend": llm.backend_name, "machine": machine(), "rows": rows}
    print_table([r for r in rows if r["case"].startswith("1")])
    print()
    print_table([r for r in rows if r["case"].startswith("2")])
    print(f"model={result['model']} backend={result['backend']} machine={result['machine']}")
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
