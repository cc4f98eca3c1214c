"""Generation speed: UnslothLLM vs the raw model it wraps, and vs LlamaIndex's own HuggingFaceLLM.

Case 1 (wrapper overhead): ``UnslothLLM.complete`` against the same model's ``model.generate`` on identical
token ids, greedy, exactly ``--new-tokens`` new tokens, batch 1. Bar: at most 3% slower.

Case 2 (vs HuggingFaceLLM): ``llama-index-llms-huggingface``'s ``HuggingFaceLLM`` loading the same checkpoint
in 4-bit NF4 through transformers + bitsandbytes, against ``UnslothLLM`` (Unsloth backend on a GPU).
Batch 1: one ``complete`` each. Batch 8: ``UnslothLLM.complete_batch`` against eight ``HuggingFaceLLM.complete``
calls (it has no batched API). Bar: at least 2x tokens/s at both.

Run on the GPU machine (a random-weight checkpoint is fine: weights don't change speed)::

    python -m benchmarks.llm_speed --model /tmp/m1b --out $OUT/llm_speed_1b.json
    python -m benchmarks.llm_speed --model /tmp/m8b --cases 1 --repeats 3

On CPU it runs case 1 on the transformers backend (``--model`` defaults to the offline SmolLM2).
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.common import interleaved_medians, machine, print_table, write_json

CONTEXT = "The bloc expanded its membership and trade grew between its members. " * 50
QUESTION = "Summarise what the context says about trade between the regional blocs."


def wrapper_overhead(llm: Any, new_tokens: int, repeats: int) -> Dict[str, Any]:
    """Case 1: the same token ids through UnslothLLM.complete and through model.generate."""
    import torch

    prompt = llm.format_prompt(QUESTION, CONTEXT)
    ids = llm._encode(prompt)
    input_ids = torch.tensor([ids], device=llm.model.device)
    attention_mask = torch.ones_like(input_ids)
    tokenizer = llm.tokenizer

    def raw() -> Any:
        with torch.inference_mode():
            return llm.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                do_sample=False, pad_token_id=tokenizer.pad_token_id, use_cache=True,
            )

    def wrapped() -> Any:
        return llm.complete(prompt, formatted=True, max_new_tokens=new_tokens, min_new_tokens=new_tokens)

    raw(), wrapped()  # warm-up: kernels, caches
    medians = interleaved_medians({"raw": raw, "wrapped": wrapped}, repeats)
    return {
        "case": "1 wrapper overhead",
        "prompt_tokens": len(ids),
        "new_tokens": new_tokens,
        "raw_generate_s": medians["raw"],
        "unslothllm_complete_s": medians["wrapped"],
        "overhead_pct": 100 * (medians["wrapped"] / medians["raw"] - 1),
        "bar": "<= 3%",
    }


def versus_huggingface_llm(llm: Any, model_name: str, new_tokens: int, repeats: int) -> List[Dict[str, Any]]:
    """Case 2: tokens/s of UnslothLLM and HuggingFaceLLM (4-bit NF4) at batch 1 and 8."""
    import torch
    from llama_index.llms.huggingface import HuggingFaceLLM
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16
    )
    hf_llm = HuggingFaceLLM(
        model_name=model_name, tokenizer_name=model_name, context_window=llm.max_seq_length, max_new_tokens=new_tokens,
        device_map="cuda:0", model_kwargs={"quantization_config": quantization, "dtype": torch.bfloat16},
        generate_kwargs={"do_sample": False, "min_new_tokens": new_tokens}, is_chat_model=False,
    )
    prompts = [llm.format_prompt(f"{QUESTION} (variant {i})", CONTEXT) for i in range(8)]
    rows = []
    for batch in (1, 8):
        chunk = prompts[:batch]

        def ours() -> Any:
            return llm.complete_batch(chunk, batch_size=batch, formatted=True, max_new_tokens=new_tokens, min_new_tokens=new_tokens)

        def theirs() -> Any:
            return [hf_llm.complete(p, formatted=True) for p in chunk]

        if batch == 1:  # warm-up once per model; batch 8 reuses the warm kernels
            ours(), theirs()
        medians = interleaved_medians({"ours": ours, "theirs": theirs}, repeats)
        tokens = batch * new_tokens
        rows.append({
            "case": f"2 vs HuggingFaceLLM, batch {batch}",
            "unslothllm_tok_s": tokens / medians["ours"],
            "huggingfacellm_tok_s": tokens / medians["theirs"],
            "ratio": medians["theirs"] / medians["ours"],
            "bar": ">= 2x",
        })
    del hf_llm
    torch.cuda.empty_cache()
    return rows


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Runs the chosen cases, prints a table and writes JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint folder or hub id (default: offline SmolLM2)")
    parser.add_argument("--cases", default="1,2", help="comma-separated: 1 (wrapper overhead), 2 (vs HuggingFaceLLM)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case-1 measurement")
    parser.add_argument("--compare-repeats", type=int, default=2, help="timed runs per case-2 measurement (HuggingFaceLLM is slow)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from llama_unsloth import UnslothLLM

    on_gpu = torch.cuda.is_available()
    llm = UnslothLLM(
        model_name=args.model, backend="auto", load_in_4bit=on_gpu, prompt_format="alpaca-context",
        max_seq_length=2048, max_new_tokens=args.new_tokens,
    )
    cases = {c.strip() for c in args.cases.split(",")}
    rows: List[Dict[str, Any]] = []
    if "1" in cases:
        rows.append(wrapper_overhead(llm, args.new_tokens, args.repeats))
    if "2" in cases and on_gpu:
        rows.extend(versus_huggingface_llm(llm, args.model, args.new_tokens, args.compare_repeats))
    result = {"model": llm.metadata.model_name, "backend": llm.backend_name, "machine": machine(), "rows": rows}
    for row in rows:
        print_table([row])
        print()
    print(f"model={result['model']} backend={result['backend']} machine={result['machine']}")
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
