"""Choosing a backend and loading a model + tokenizer through it; which LLM class a command gets.

Two backends give one API:

* ``unsloth``: ``FastLanguageModel.from_pretrained`` (4-bit bitsandbytes, Unsloth's fast kernels). Needs CUDA.
* ``transformers``: ``AutoModelForCausalLM`` (+ PEFT for adapter folders); runs anywhere, and is what
  CPU machines and CI use.

``auto`` picks Unsloth when CUDA is available and it imports. CUDA is checked *before* importing
unsloth: without a GPU its import raises ``NotImplementedError`` and leaves files behind.

:func:`load_llm` is the loading policy of the recipes: a fine-tuned folder (with its layout) or a
model name, in-process (``UnslothLLM``) or on a model server (``ServedLLM``), 4-bit only with CUDA.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Tuple

from llama_unsloth.errors import ModelLoadError
from llama_unsloth.import_utils import (
    UNSLOTH_INSTALL_HINT,
    cuda_available,
    is_bitsandbytes_available,
    is_unsloth_available,
)

logger = logging.getLogger(__name__)

Backend = Literal["auto", "unsloth", "transformers"]
BACKENDS = ("auto", "unsloth", "transformers")

_MODEL_FILES = ("config.json", "adapter_config.json")


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


def check_model_path(model_name: str) -> None:
    """Gives a clear error for a local path that is missing or is not a model folder.

    Hub ids (``org/name``) that do not exist locally are left to the loader.
    """
    path = Path(model_name).expanduser()
    looks_local = path.is_absolute() or model_name.startswith((".", "~")) or model_name.count("/") > 1
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            return
        if not path.is_dir() or not any((path / name).is_file() for name in _MODEL_FILES):
            raise ModelLoadError(
                f"{model_name} is not a model folder: it has no config.json (full model) or "
                "adapter_config.json (LoRA adapter). Point at the folder the finetune recipe wrote."
            )
    elif looks_local:
        raise ModelLoadError(f"Model folder {model_name} does not exist.")


def is_adapter_folder(model_name: str) -> bool:
    """True for a folder that holds a LoRA adapter but no full model."""
    path = Path(model_name)
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def torch_dtype(dtype: Optional[str], on_gpu: bool) -> Any:
    import torch

    if dtype in (None, "auto"):
        if on_gpu:
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[str(dtype)]
    except KeyError:
        raise ValueError(f"Unknown dtype {dtype!r}: use float32, bfloat16, float16 or None.") from None


def is_prequantized(model_name: str) -> bool:
    """True for a model folder whose config.json holds a quantization_config (a pre-quantized checkpoint)."""
    config = Path(model_name) / "config.json"
    if not config.is_file():
        return False
    return "quantization_config" in json.loads(config.read_text(encoding="utf-8"))


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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    on_gpu = cuda_available()
    kwargs: dict = {"dtype": torch_dtype(dtype, on_gpu), "trust_remote_code": trust_remote_code}
    adapter = is_adapter_folder(model_name)
    if load_in_4bit and not is_prequantized(model_name):
        if is_bitsandbytes_available():
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=kwargs["dtype"],
            )
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
