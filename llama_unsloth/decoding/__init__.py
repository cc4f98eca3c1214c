"""Decoding: the standard generator, and the fast path (static KV cache in length buckets, CUDA graphs, torchao).

Modules, one concept each:

* :mod:`~llama_unsloth.decoding.generator`: ``model.generate`` over left-padded batches, one call per model at a time;
* :mod:`~llama_unsloth.decoding.fast_path`: when the fast path starts, when a call takes ``generate`` instead;
* :mod:`~llama_unsloth.decoding.decoder`: the fast decode loop (prefill, one token, n tokens; capture, compile);
* :mod:`~llama_unsloth.decoding.options`: the weights, modes and ``generate`` options the fast loop accepts;
* :mod:`~llama_unsloth.decoding.buckets`: the cache length and batch size each call runs in;
* :mod:`~llama_unsloth.decoding.attention`: attention of the one new token without K/V copies;
* :mod:`~llama_unsloth.decoding.sampling`: greedy and sampled tokens, as ``generate`` picks them;
* :mod:`~llama_unsloth.decoding.weights`: loading the plain 16-bit model; torchao int8 / int4;
* :mod:`~llama_unsloth.decoding.pristine`: transformers' own classes after Unsloth patched them;
* :mod:`~llama_unsloth.decoding.tinygemm`: int4 prompts at bf16 speed;
* :mod:`~llama_unsloth.decoding.stopping`: stop strings without a per-step GPU cost;
* :mod:`~llama_unsloth.decoding.constrained`: answers constrained to a JSON schema (lm-format-enforcer).

Other packages import these names from here, never from the modules inside (which may move). Modules inside
this package import from each other's modules, never from here (that would be an import cycle). The bucket
maths is not re-exported: nothing outside uses it, and the function ``buckets`` would hide the module
``buckets`` (``from llama_unsloth.decoding import buckets`` is the module).
"""

from typing import TYPE_CHECKING, Any

from llama_unsloth.decoding.attention import DECODE_ATTENTION, grouped_decode_attention, use_grouped_decode_attention
from llama_unsloth.decoding.constrained import json_schema_allowed_tokens
from llama_unsloth.decoding.decoder import COMPILE_OPTIONS, FastDecoder, FastDecodeStats
from llama_unsloth.decoding.fast_path import FastPath, FastPathSettings
from llama_unsloth.decoding.generator import (
    count_until_end,
    free_cuda_cache,
    generate,
    left_padded,
    lock_for,
    with_stop_strings,
)
from llama_unsloth.decoding.options import MODES, WEIGHTS, cuda_reason, weights_error
from llama_unsloth.decoding.pristine import foreign_forwards, plain_causal_lm_class, pristine_modeling_module
from llama_unsloth.decoding.weights import load_fast_model, quantize_weights
from llama_unsloth.errors import FastDecodeUnavailable

if TYPE_CHECKING:
    from llama_unsloth.decoding.stopping import StopOnStrings


def __getattr__(name: str) -> Any:
    # StopOnStrings subclasses transformers' StoppingCriteria: it is imported on first use, so that importing
    # llama_unsloth leaves transformers unimported (Unsloth must patch it first).
    if name == "StopOnStrings":
        from llama_unsloth.decoding.stopping import StopOnStrings

        return StopOnStrings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COMPILE_OPTIONS",
    "DECODE_ATTENTION",
    "MODES",
    "WEIGHTS",
    "FastDecodeStats",
    "FastDecodeUnavailable",
    "FastDecoder",
    "FastPath",
    "FastPathSettings",
    "StopOnStrings",
    "count_until_end",
    "cuda_reason",
    "foreign_forwards",
    "free_cuda_cache",
    "generate",
    "grouped_decode_attention",
    "json_schema_allowed_tokens",
    "left_padded",
    "load_fast_model",
    "lock_for",
    "plain_causal_lm_class",
    "pristine_modeling_module",
    "quantize_weights",
    "use_grouped_decode_attention",
    "weights_error",
    "with_stop_strings",
]
