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
    profile-OPTION  OPTION, then torch.profiler over 16 decode steps: GPU time per token by kernel kind

Variants of a fast option, for side-by-side comparisons of what each part of the fast path buys:
    -sdpa           transformers' SDPA attention (K/V heads copied per query head) instead of grouped_decode_attention
    -nocdt          torch.compile without coordinate-descent tuning (fast_decode.COMPILE_OPTIONS = {})
    -autotune       COMPILE_OPTIONS plus inductor max_autotune (Triton matmul templates benchmarked per shape)

Every batch-1 row also reports ``prefill_s`` (the same call with one new token) and ``decode_ms_per_token``
(the rest of the time over the other new tokens).

Prompt: the issue's 563-token prompt (SmolLM2 tokenizer), greedy, exactly ``--new-tokens`` new tokens
(``min_new_tokens``), median of ``--repeats`` timed runs after warm-up. Prints one RESULT json line.

    python3 benchmarks/gpu/bench_fast_decode.py fast-int4 /tmp/m8b --out $OUT/fast_decode_8b.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
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


KERNEL_KINDS = (
    (
        "matmul",
        ("gemv", "gemm", "nvjet", "cutlass", "sm90", "sm80", "cublas", "int4pack", "tinygemm", "mm_", "splitk"),
    ),
    ("attention", ("fmha", "flash", "attention", "sdpa", "bmm")),
    ("fused (inductor triton)", ("triton_",)),
)


def _kind(name: str) -> str:
    lowered = name.lower()
    for kind, needles in KERNEL_KINDS:
        if any(n in lowered for n in needles):
            return kind
    return "other"


def profile_decode(llm, steps: int = 16) -> dict:
    """GPU time per decode token by kernel kind: the captured graph replayed, and the step run outside a graph."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    decoder = llm.fast_decoder
    slot = next(iter(decoder._slots.values()))
    out: dict = {"steps": steps}
    for label, run in (("graph", lambda: slot.graph.replay()), ("no_graph", lambda: decoder._decode_step(slot))):
        if label == "graph" and slot.graph is None:
            continue
        with torch.inference_mode():
            slot.step.fill_(600)  # inside the bucket, past a 563-token prompt, as in the timed runs
            slot.positions.fill_(600)
            run()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                began = time.perf_counter()
                for _ in range(steps):
                    run()
                torch.cuda.synchronize()
                wall = time.perf_counter() - began
        kinds: dict = {}
        kernels = 0
        top = []
        for event in prof.key_averages():
            gpu_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
            if not gpu_us or event.device_type != torch.autograd.DeviceType.CUDA:
                continue
            kinds[_kind(event.key)] = kinds.get(_kind(event.key), 0.0) + gpu_us
            kernels += event.count
            top.append((gpu_us, event.count, event.key[:90]))
        top.sort(reverse=True)
        out[label] = {
            "wall_ms_per_token": round(wall / steps * 1000, 3),
            "gpu_ms_per_token": round(sum(kinds.values()) / steps / 1000, 3),
            "kernels_per_token": round(kernels / steps, 1),
            "ms_per_token_by_kind": {k: round(v / steps / 1000, 3) for k, v in sorted(kinds.items())},
            "top_kernels": [
                {"ms_per_token": round(us / steps / 1000, 3), "calls_per_token": round(n / steps, 1), "name": name}
                for us, n, name in top[:12]
            ],
        }
    return out


def _apply_variants(parts: list) -> None:
    """The -sdpa / -nocdt / -autotune variants: module settings of llama_unsloth.decoding.decoder, set before loading."""
    from llama_unsloth.decoding import decoder

    if "sdpa" in parts:
        decoder.use_grouped_decode_attention = lambda model: False
    if "nocdt" in parts:
        decoder.COMPILE_OPTIONS = {}
    if "autotune" in parts:
        decoder.COMPILE_OPTIONS = {**decoder.COMPILE_OPTIONS, "max_autotune": True}


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
    option = option.removeprefix("u+")
    profiling = option.startswith("profile-")
    option = option.removeprefix("profile-")
    if unsloth_first:
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
        with torch.inference_mode():
            one = {**gen, "max_new_tokens": 1, "min_new_tokens": 1}
            result["prefill_s"] = round(_timed(lambda: model.generate(**inputs, **one), args.repeats)[0], 4)
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
        llm.max_new_tokens, llm.generate_kwargs = 1, {"do_sample": False, "min_new_tokens": 1}
        result["prefill_s"] = round(_timed(lambda: llm.complete(PROMPT, formatted=True), args.repeats)[0], 4)
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
            _apply_variants(parts)
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
            one = {"max_new_tokens": 1, "min_new_tokens": 1}
            result["prefill_s"] = round(
                _timed(lambda: llm.complete(PROMPT, formatted=True, **one), args.repeats)[0], 4
            )
            if fast and profiling:
                try:
                    result["profile"] = profile_decode(llm)
                except Exception as err:  # the profile is extra: the timed figures above still count
                    result["profile"] = {"error": f"{type(err).__name__}: {err}"}
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
                    from llama_unsloth.decoding import foreign_forwards

                    result["foreign_forwards"] = foreign_forwards(llm.model)
                    result["model_class_module"] = type(llm.model).__module__
        if "fast" in option and not option.startswith("varied"):
            result.setdefault("fast", llm.fast_decode_stats())
    if "s" in result and "tok_per_s" not in result:
        result["tok_per_s"] = round(result["generated"] / result["s"], 1)
    if "prefill_s" in result and result.get("generated", 0) > 1:
        result["decode_ms_per_token"] = round(
            (result["s"] - result["prefill_s"]) / (result["generated"] - 1) * 1000, 2
        )
    result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    result["allocated_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    result["total_s"] = round(time.perf_counter() - began, 1)
    line = json.dumps(result)
    print("RESULT", line, flush=True)
    if args.out:  # one JSON line per option, appended (the GPU machine returns few files)
        with Path(args.out).open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


if __name__ == "__main__":
    main()
    # The result is written: leave now. Processes that compiled sometimes hung at interpreter exit (inductor's
    # worker pool) until the driver's timeout, which cost device time and nothing else.
    sys.stdout.flush()
    os._exit(0)
