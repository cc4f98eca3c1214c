"""Choosing a backend and loading a model + tokenizer through it.

Two backends give one API:

* ``unsloth``: ``FastLanguageModel.from_pretrained`` (4-bit bitsandbytes, Unsloth's fast kernels). Needs CUDA.
* ``transformers``: ``AutoModelForCausalLM`` (+ PEFT for adapter folders); runs anywhere, and is what
  CPU machines and CI use.

``auto`` picks Unsloth when CUDA is available and it imports. CUDA is checked *before* importing
unsloth: without a GPU its import raises ``NotImplementedError`` and leaves files behind.

What a path holds is read in :mod:`~llama_unsloth.models.paths`, the dtype and the 4-bit settings
come from :mod:`~llama_unsloth.models.dtypes`. Which LLM a command gets (a fine-tuned folder with its
layout, in-process or served) is :func:`llama_unsloth.llms.factory.load_llm`'s policy.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Literal, Optional, Tuple

from llama_unsloth.errors import ModelLoadError
from llama_unsloth.import_utils import (
    UNSLOTH_INSTALL_HINT,
    cuda_available,
    is_bitsandbytes_available,
    is_unsloth_available,
)
from llama_unsloth.models.dtypes import nf4_config, torch_dtype
from llama_unsloth.models.paths import check_model_path, is_adapter_folder, is_prequantized

logger = logging.getLogger(__name__)

Backend = Literal["auto", "unsloth", "transformers"]
BACKENDS = ("auto", "unsloth", "transformers")


def resolve_backend(backend: str) -> str:
    """Turns ``auto`` into ``unsloth`` or ``transformers``; checks an explicit choice is usable.

    Raises:
        ValueError: Unknown backend name.
        ModelLoadError: ``unsloth`` was asked for but there is no GPU or it is not installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}.")
    if backend == "transformers":
        return backend
    usable = is_unsloth_available()
    if backend == "unsloth" and not usable:
        raise ModelLoadError(
            f"backend='unsloth' needs a CUDA GPU and the unsloth package ({UNSLOTH_INSTALL_HINT}). "
            'Use backend="transformers" (or "auto") on CPU.'
        )
    return "unsloth" if usable else "transformers"


def load_model(
    model_name: str,
    *,
    backend: str = "auto",
    max_seq_length: int = 2048,
    load_in_4bit: bool = True,
    dtype: Optional[str] = None,
    trust_remote_code: bool = False,
    for_training: bool = False,
) -> Tuple[Any, Any, str]:
    """Loads ``(model, tokenizer, backend)`` for a hub id or a local folder.

    Args:
        model_name: Hub id, full model folder, or LoRA adapter folder (its base is read from it).
        backend: ``auto``, ``unsloth`` or ``transformers``.
        max_seq_length: Longest sequence the model will see (Unsloth sizes its RoPE cache with it).
        load_in_4bit: Load bitsandbytes NF4 weights. Where 4-bit cannot run (no CUDA), a warning is
            given and the model loads in full precision.
        dtype: ``None``/``auto`` (bf16 or fp16 on GPU, fp32 on CPU), ``float32``, ``bfloat16``, ``float16``.
        trust_remote_code: Allow code from the model folder to run. Off unless the user turns it on.
        for_training: Skip Unsloth's inference switch and ``eval()``.

    Raises:
        ModelLoadError: The path is missing or is not a model folder, or the backend is unusable.
    """
    check_model_path(model_name)
    chosen = resolve_backend(backend)
    if chosen == "unsloth":
        model, tokenizer = _load_unsloth(
            model_name, max_seq_length, load_in_4bit, dtype, trust_remote_code, for_training
        )
    else:
        model, tokenizer = _load_transformers(model_name, load_in_4bit, dtype, trust_remote_code, for_training)
    return model, tokenizer, chosen


def _load_unsloth(
    model_name: str,
    max_seq_length: int,
    load_in_4bit: bool,
    dtype: Optional[str],
    trust_remote_code: bool,
    for_training: bool,
) -> Tuple[Any, Any]:
    """``FastLanguageModel.from_pretrained``: Unsloth picks the dtype itself unless one is asked for."""
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_name,
        max_seq_length=max_seq_length,
        dtype=None if dtype in (None, "auto") else torch_dtype(dtype, True),
        load_in_4bit=load_in_4bit,
        trust_remote_code=trust_remote_code,
    )
    if not for_training:
        FastLanguageModel.for_inference(model)
    return model, tokenizer


def _load_transformers(
    model_name: str, load_in_4bit: bool, dtype: Optional[str], trust_remote_code: bool, for_training: bool
) -> Tuple[Any, Any]:
    """transformers (+ PEFT for an adapter folder); NF4 only where bitsandbytes can run, else a warning."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    on_gpu = cuda_available()
    kwargs: dict = {"dtype": torch_dtype(dtype, on_gpu), "trust_remote_code": trust_remote_code}
    adapter = is_adapter_folder(model_name)
    if load_in_4bit and not is_prequantized(model_name):
        if is_bitsandbytes_available():
            kwargs["quantization_config"] = nf4_config(kwargs["dtype"])
        else:
            warnings.warn(
                "load_in_4bit=True needs a CUDA GPU and bitsandbytes; loading in full precision instead. "
                "Pass load_in_4bit=False to silence this.",
                stacklevel=3,
            )
    if on_gpu:
        kwargs["device_map"] = "auto"
    if adapter:
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(model_name, is_trainable=for_training, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_name, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(model_name, trust_remote_code=trust_remote_code)
    if not for_training:
        model.eval()
    return model, tokenizer
