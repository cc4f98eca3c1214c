"""Tiny random models for tests: real tokenizers, random weights, saved in under a second."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict


def save_tiny_llama(tokenizer: Any, folder: Path, **config: Any) -> Path:
    """Saves a random 2-layer Llama (hidden 64) over ``tokenizer`` into ``folder``; ``config`` overrides LlamaConfig fields."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    settings: Dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        # Peaked logits: greedy decoding has no near-ties that float noise could flip.
        "initializer_range": 0.5,
        "tie_word_embeddings": True,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    settings.update(config)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**settings)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
