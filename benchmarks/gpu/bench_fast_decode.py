"""Batch-1 decode speed of UnslothLLM(fast_decode=True) against Unsloth's own generate, HuggingFaceLLM and today's UnslothLLM.

Issue 13. One *option* per process (each loads its own model; Unsloth's patches, peak-memory counters and
torch.compile caches never leak from one option into another), run side by side by ``fast_decode.sh``:

    unsloth4        Unsloth FastLanguageModel 4-bit + for_inference, model.generate (Unsloth's own generate)
    hf              LlamaIndex HuggingFaceLLM (transformers + bitsandbytes NF4), .complete
    today           UnslothLLM(backend="unsloth") .complete (4-bit), today's path
    fast-bf16       UnslothLLM(fast_decode=True) .complete, torch.compile + CUDA graphs, bf16
    fast-bf16-graphs            same, CUDA graphs of the eager step (no compile)
    fast-int8 / fast-int4       torchao weight-only (compile + CUDA graphs)
    fast-int4-graphs            int4, graphs of the eager step
    batch8-today / batch8-fast  complete_batch of 8 prompts, batch_size=8
    varied-fast-MODE            100 queries of varied prompt length (24 new tokens): graphs and compilations after them
    u+OPTION        OPTION in a process that imported unsloth and loaded a model through FastLanguageModel first

Prompt: the issue's 563-token prompt (SmolLM2 tokenizer), greedy, exactly ``--new-tokens`` new tokens
(``min_new_tokens``), median of ``--repeats`` timed runs after warm-up. Prints one RESULT json line.

    python3 benchmarks/gpu/bench_fast_decode.py fast-int4 /tmp/m8b --out $OUT/fast_decode_8b.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

PROMPT = (
    "### Instruction: summarise the context about trade between regional blocs.\n### Context: "
    + "The bloc expanded its membership and trade grew. " * 60
    + "\n### Response:"
)


def _unsloth_first(path: str) -> None:
    """Imports unsloth and loads the checkpoint through FastLanguageModel, so its patches are in place."""
    import unsloth  # noqa: F401
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(path, max_seq_length=2048, load_in_4bit=True, dtype=None)
    del model


def _timed(fn, repeats: int):
    import torch

    times = []
    out = None
    for _ in range(repeats):
        torch.cuda.synchronize()
        began = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("option")
    parser.add_argument("model")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    option = args.option
    unsloth_first = option.startswith("u+")
    if unsloth_first:
        option = option[2:]
        _unsloth_first(args.model)
    elif option in ("unsloth4", "today", "batch8-today"):
        import unsloth  # noqa: F401  (before transformers, as Unsloth asks)
    import torch

    new = args.new_tokens
    result = {
        "option": args.option,
        "model": args.model,
        "new_tokens": new,
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    began = time.perf_counter()
    torch.cuda.reset_peak_memory_stats()
    if option == "unsloth4":
        from unsloth import FastLanguageModel

        model, tok = FastLanguageModel.from_pretrained(args.model, max_seq_length=2048, load_in_4bit=True, dtype=None)
        FastLanguageModel.for_inference(model)
        inputs = tok([PROMPT], return_tensors="pt").to("cuda")
        gen = {
            "max_new_tokens": new,
            "min_new_tokens": new,
            "do_sample": False,
            "pad_token_id": tok.pad_token_id or tok.eos_token_id,
        }
        result["load_s"] = round(time.perf_counter() - began, 1)
        with torch.inference_mode():
            model.generate(**inputs, **gen)
            torch.cuda.reset_peak_memory_stats()
            dt, out = _timed(lambda: model.generate(**inputs, **gen), args.repeats)
        n_new = int(out.shape[1] - inputs["input_ids"].shape[1])
        result.update(prompt_tokens=int(inputs["input_ids"].shape[1]), s=round(dt, 4), generated=n_new)
    elif option == "hf":
        from llama_index.llms.huggingface import HuggingFaceLLM
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        llm = HuggingFaceLLM(
            model_name=args.model,
            tokenizer_name=args.model,
            context_window=2048,
            max_new_tokens=new,
            device_map="cuda:0",
            model_kwargs={"quantization_config": quantization, "dtype": torch.bfloat16},
            generate_kwargs={"do_sample": False, "min_new_tokens": new},
            is_chat_model=False,
        )
        result["load_s"] = round(time.perf_counter() - began, 1)
        llm.complete(PROMPT, formatted=True)
        torch.cuda.reset_peak_memory_stats()
        dt, out = _timed(lambda: llm.complete(PROMPT, formatted=True), args.repeats)
        result.update(prompt_tokens=len(llm._tokenizer(PROMPT)["input_ids"]), s=round(dt, 4), generated=new)
    else:
        from llama_unsloth import UnslothLLM

        fast = "fast" in option
        kw = {
            "max_new_tokens": new,
            "max_seq_length": 2048,
            "prompt_format": "alpaca",
            "generate_kwargs": {"min_new_tokens": new},
            "set_global_tokenizer": True,
        }
        if fast:
            parts = option.split("-")
            weights = next((p for p in parts if p in ("bf16", "int8", "int4")), "bf16")
            mode = "graphs" if "graphs" in parts else "compile"
            kw.update(fast_decode=True, weights=weights, fast_decode_mode=mode)
        else:
            kw.update(backend="unsloth")
        llm = UnslothLLM(model_name=args.model, **kw)
        torch.cuda.synchronize()
        result["load_s"] = round(time.perf_counter() - began, 1)
        result["load_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["backend"] = llm.backend_name
        n_prompt = len(llm._encode(PROMPT))
        result["prompt_tokens"] = n_prompt
        if option.startswith("varied"):
            rng = random.Random(0)
            words = PROMPT.split()
            warm = time.perf_counter()
            seconds = []
            for _ in range(100):
                prompt = " ".join(words[: rng.randint(8, len(words))]) * rng.choice([1, 1, 2, 3])
                t = time.perf_counter()
                llm.complete(prompt, formatted=True, max_new_tokens=24, min_new_tokens=24)
                seconds.append(time.perf_counter() - t)
            result.update(
                queries=100,
                total_s=round(time.perf_counter() - warm, 1),
                median_query_s=round(statistics.median(seconds), 4),
                fast=llm.fast_decode_stats(),
            )
        elif option.startswith("batch8"):
            prompts = [PROMPT[: len(PROMPT) - 40 * i] for i in range(8)]
            if fast:
                result["warm_up"] = llm.warm_up([n_prompt], batch_sizes=(8,))
            llm.complete_batch(prompts, batch_size=8, formatted=True)
            torch.cuda.reset_peak_memory_stats()
            dt, out = _timed(lambda: llm.complete_batch(prompts, batch_size=8, formatted=True), args.repeats)
            n_new = sum(r.raw["completion_tokens"] for r in out)
            result.update(batch=8, s=round(dt, 4), generated=n_new, tok_per_s=round(n_new / dt, 1))
        else:
            if fast:
                t = time.perf_counter()
                result["warm_up"] = llm.warm_up([n_prompt])
                result["warm_up_s"] = round(time.perf_counter() - t, 1)
            llm.complete(PROMPT, formatted=True)
            torch.cuda.reset_peak_memory_stats()
            dt, out = _timed(lambda: llm.complete(PROMPT, formatted=True), args.repeats)
            result.update(s=round(dt, 4), generated=out.raw["completion_tokens"])
            if fast:
                result["fast"] = llm.fast_decode_stats()
                ids = llm._encode(PROMPT)
                # The first 64 greedy tokens of the fast path against eager generate() on the same weights.
                fast_ids = llm._run_generate([ids], {**llm._generation_kwargs({"max_new_tokens": 64})})[0][
                    0, len(ids) :
                ].tolist()
                with torch.inference_mode():
                    eager = llm.model.generate(
                        input_ids=torch.tensor([ids], device="cuda"),
                        max_new_tokens=64,
                        min_new_tokens=64,
                        do_sample=False,
                        pad_token_id=llm.tokenizer.pad_token_id,
                    )[0, len(ids) :].tolist()
                same = next(
                    (i for i, (a, b) in enumerate(zip(fast_ids, eager)) if a != b), min(len(fast_ids), len(eager))
                )
                result["greedy_tokens_equal_to_eager"] = same
                if unsloth_first:
                    from llama_unsloth.fast_decode import foreign_forwards

                    result["foreign_forwards"] = foreign_forwards(llm.model)
                    result["model_class_module"] = type(llm.model).__module__
        if "fast" in option and not option.startswith("varied"):
            result.setdefault("fast", llm.fast_decode_stats())
    if "s" in result and "tok_per_s" not in result:
        result["tok_per_s"] = round(result["generated"] / result["s"], 1)
    result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    result["allocated_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    result["total_s"] = round(time.perf_counter() - began, 1)
    line = json.dumps(result)
    print("RESULT", line, flush=True)
    if args.out:  # one JSON line per option, appended (the GPU machine returns few files)
        with Path(args.out).open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main())
