"""Helpers of the decoding GPU tests: a model whose greedy answer is well defined, and equality up to ties."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def peaked_llama(folder: Path, tokenizer_path: Path) -> Path:
    """A small random Llama with peaked logits (greedy has no near-ties): equality tests on the GPU."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        initializer_range=0.3,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def assert_equal_but_for_ties(llm: Any, ids: list, fast: list, eager: list, at_least: int = 32) -> None:
    """``fast`` equals ``eager`` for ``at_least`` tokens, or first differs where eager's top two logits tie in bf16.

    Random weights give flat logits: two candidates within bf16 rounding of each other are common, and which
    one wins depends on the order of float additions (fused kernels), not on a bug. A bug (a wrong position,
    mask or cache slot) changes the answer where the choice is clear.
    """
    import torch

    first = next((i for i, (a, b) in enumerate(zip(fast, eager)) if a != b), len(eager))
    if first >= at_least:
        return
    with torch.inference_mode():
        logits = llm.model(input_ids=torch.tensor([ids + eager[:first]], device="cuda")).logits[0, -1].float()
    top = torch.topk(logits, 2).values
    gap, scale = float(top[0] - top[1]), float(top[0].abs())
    assert gap <= 0.02 * scale + 1e-3, (
        f"fast and eager differ at token {first} where eager's choice was clear (gap {gap:.4f}, logit {scale:.2f})"
    )
    print(f"fast == eager for {first} tokens, then a near-tie (gap {gap:.4f} at logit {scale:.2f})")


def assert_fast_equals_eager(llm: Any, question: str, n_tokens: int) -> None:
    """``llm``'s fast-path answer to ``question`` (``n_tokens`` greedy tokens) is the eager ``generate`` one, but for ties."""
    import torch

    ids = llm._encode(llm.completion_to_prompt_text(question))
    fast = llm._run_generate([ids], llm._generation_kwargs({}))[0][0, len(ids) :].tolist()
    with torch.inference_mode():
        eager = llm.model.generate(
            input_ids=torch.tensor([ids], device="cuda"),
            max_new_tokens=n_tokens,
            min_new_tokens=n_tokens,
            do_sample=False,
            pad_token_id=llm.tokenizer.pad_token_id,
        )[0, len(ids) :].tolist()
    assert_equal_but_for_ties(llm, ids, fast, eager)
