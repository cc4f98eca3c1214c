"""Our users' four architectures, as configurations: the real widths, and tiny or reduced-depth copies.

The numbers are the published ``config.json`` values of the checkpoints our users fine-tune
(``unsloth/Mistral-Nemo-Base-2407-bnb-4bit``, ``unsloth/Phi-3-medium-4k-instruct``,
``unsloth/gemma-2-27b-bnb-4bit``, ``unsloth/llama-3-8b-bnb-4bit``). The GPU runs build random-weight
checkpoints from them (``benchmarks/gpu/checkpoints.py``); the CPU tests use :func:`tiny_config`, the
same architecture class and its special features (Gemma-2's soft-capping and sliding window, Phi-3's
fused projections) at a width that trains in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass(frozen=True)
class Architecture:
    """One family: its transformers config class and the real configuration.

    Attributes:
        name: Our short name (``gemma2-27b`` ...).
        checkpoint: The hub checkpoint whose ``config.json`` the values come from.
        config_class: Name of the transformers config class (``Gemma2Config`` ...).
        real: The real configuration's fields.
        params_b: Parameter count of the real model, in billions (as published).
    """

    name: str
    checkpoint: str
    config_class: str
    real: Dict[str, Any] = field(default_factory=dict)
    params_b: float = 0.0

    def config(self, num_hidden_layers: Optional[int] = None, **overrides: Any) -> Any:
        """The transformers config at the real widths; ``num_hidden_layers`` gives a reduced-depth copy."""
        import transformers

        values = dict(self.real)
        if num_hidden_layers is not None:
            values["num_hidden_layers"] = num_hidden_layers
        values.update(overrides)
        return getattr(transformers, self.config_class)(**values)

    def tiny_config(self, vocab_size: int, **overrides: Any) -> Any:
        """The same architecture scaled down for CPU tests (2 layers, hidden 64), over a ``vocab_size`` tokenizer."""
        heads, kv = 4, 2
        values: Dict[str, Any] = {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "head_dim": 16,
            "vocab_size": vocab_size,
            "max_position_embeddings": 2048,
            # Peaked logits: greedy decoding has no near-ties that float noise could flip.
            "initializer_range": 0.5,
            # The tokenizer's ids, given in ``overrides``; the config classes' defaults (Phi-3: 32000) would
            # point outside a small vocabulary.
            "bos_token_id": None,
            "eos_token_id": None,
            "pad_token_id": None,
        }
        if self.config_class == "Gemma2Config":
            values.update(query_pre_attn_scalar=16, sliding_window=16)  # short window: the tests cross it
        if self.config_class == "Phi3Config":
            values.update(sliding_window=16, original_max_position_embeddings=2048)
        values.update(overrides)
        real = {k: v for k, v in self.real.items() if k not in values and not k.endswith("_token_id")}
        return self.config().__class__(**{**real, **values})


ARCHITECTURES: Dict[str, Architecture] = {
    "llama3-8b": Architecture(
        name="llama3-8b",
        checkpoint="unsloth/llama-3-8b-bnb-4bit",
        config_class="LlamaConfig",
        params_b=8.03,
        real={
            "vocab_size": 128256,
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 8192,
            "rope_theta": 500000.0,
            "rms_norm_eps": 1e-5,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "bos_token_id": 128000,
            "eos_token_id": 128001,
        },
    ),
    "mistral-nemo-12b": Architecture(
        name="mistral-nemo-12b",
        checkpoint="unsloth/Mistral-Nemo-Base-2407-bnb-4bit",
        config_class="MistralConfig",
        params_b=12.25,
        real={
            "vocab_size": 131072,
            "hidden_size": 5120,
            "intermediate_size": 14336,
            "num_hidden_layers": 40,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            # Nemo's head_dim (128) is not hidden/heads (160): the config must say so.
            "head_dim": 128,
            "max_position_embeddings": 1024000,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-5,
            "hidden_act": "silu",
            "sliding_window": None,
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
    ),
    "phi3-medium-14b": Architecture(
        name="phi3-medium-14b",
        checkpoint="microsoft/Phi-3-medium-4k-instruct",
        config_class="Phi3Config",
        params_b=13.96,
        real={
            "vocab_size": 32064,
            "hidden_size": 5120,
            "intermediate_size": 17920,
            "num_hidden_layers": 40,
            "num_attention_heads": 40,
            "num_key_value_heads": 10,
            "max_position_embeddings": 4096,
            "original_max_position_embeddings": 4096,
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-5,
            "hidden_act": "silu",
            "sliding_window": 2047,
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 32000,
            "pad_token_id": 32000,
        },
    ),
    "gemma2-27b": Architecture(
        name="gemma2-27b",
        checkpoint="unsloth/gemma-2-27b-bnb-4bit",
        config_class="Gemma2Config",
        params_b=27.23,
        real={
            "vocab_size": 256000,
            "hidden_size": 4608,
            "intermediate_size": 36864,
            "num_hidden_layers": 46,
            "num_attention_heads": 32,
            "num_key_value_heads": 16,
            "head_dim": 128,
            "max_position_embeddings": 8192,
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-6,
            "hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": 144,
            "sliding_window": 4096,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
            "tie_word_embeddings": True,
            "bos_token_id": 2,
            "eos_token_id": 1,
            "pad_token_id": 0,
        },
    ),
}


def parameter_count(config: Any) -> int:
    """Parameters of a decoder-only model with this config, counted on the meta device (no memory used)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())
