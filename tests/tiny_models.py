"""Tiny random models for tests: real tokenizers, random weights, saved in under a second."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional


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


def save_tiny_arch(name: str, folder: Path, tokenizer: Optional[Any] = None, **config: Any) -> Path:
    """Saves a random tiny model of one of our users' architectures (``benchmarks.architectures.ARCHITECTURES``).

    The model is the family's own transformers class at 2 layers, hidden 64 (``Architecture.tiny_config``), with
    the tokenizer's special ids; ``tokenizer`` defaults to the family's stand-in at its real size
    (:func:`benchmarks.architectures.family_tokenizer`). A real-sized tokenizer gets the real number of embedding rows
    (Phi-3: 32064 for its 32011 tokens), a smaller one exactly ``len(tokenizer)``.

    Args:
        name: ``llama3-8b``, ``mistral-nemo-12b``, ``phi3-medium-14b`` or ``gemma2-27b``.
        folder: Where the model folder is written.
        tokenizer: The tokenizer saved with it.
        **config: Overrides of the tiny config's fields.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from benchmarks.architectures import ARCHITECTURES, TOKENIZER_FAMILIES, family_tokenizer

    tokenizer = tokenizer if tokenizer is not None else family_tokenizer(name)
    architecture = ARCHITECTURES[name]
    real_size = len(tokenizer) == TOKENIZER_FAMILIES[name].size
    settings: Dict[str, Any] = {
        "vocab_size": architecture.real["vocab_size"] if real_size else len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    settings.update(config)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(architecture.tiny_config(**settings)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
