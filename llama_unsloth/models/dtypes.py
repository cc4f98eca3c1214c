"""Which torch dtype a model gets, and the one 4-bit (NF4) quantization that loading and exporting share.

Every place that picks a dtype asks :func:`auto_dtype`, so a GPU without bf16 (a T4) gets fp16
everywhere, never bf16 in one step and fp16 in the next. torch and transformers are imported inside
the functions: importing this module stays light.
"""

from __future__ import annotations

from typing import Any, Optional

# The dtype names users may write (--dtype, UnslothLLM(dtype=...)), each a torch attribute of that name.
DTYPE_NAMES = ("float32", "bfloat16", "float16")


def auto_dtype(on_gpu: Optional[bool] = None, *, sixteen_bit: bool = False) -> Any:
    """The dtype when none is asked for: bf16 where the GPU supports it, else fp16; fp32 on CPU.

    Args:
        on_gpu: Whether the model runs on a CUDA GPU; ``None``: whether this machine has one.
        sixteen_bit: The caller needs a 16-bit dtype even on CPU (a merged model saved from a CPU
            run): bf16 there instead of fp32.

    Returns:
        ``torch.bfloat16``, ``torch.float16`` or ``torch.float32``.
    """
    import torch

    if on_gpu is None:
        # Looked up at call time: a test (or a CPU-only plan) that replaces import_utils.cuda_available is obeyed.
        from llama_unsloth.import_utils import cuda_available

        on_gpu = cuda_available()
    if on_gpu:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if sixteen_bit else torch.float32


def torch_dtype(dtype: Optional[Any], on_gpu: bool) -> Any:
    """The torch dtype for a user's ``dtype`` setting.

    Args:
        dtype: ``None``/``auto`` (:func:`auto_dtype`), ``float32``, ``bfloat16``, ``float16``, or a
            ``torch.dtype`` (returned as it is).
        on_gpu: Whether the model runs on a CUDA GPU (decides ``auto``).

    Raises:
        ValueError: An unknown dtype name.
    """
    import torch

    if dtype in (None, "auto"):
        return auto_dtype(on_gpu)
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return {name: getattr(torch, name) for name in DTYPE_NAMES}[str(dtype)]
    except KeyError:
        raise ValueError(f"Unknown dtype {dtype!r}: use {', '.join(DTYPE_NAMES)} or None.") from None


def nf4_config(compute_dtype: Any) -> Any:
    """transformers' ``BitsAndBytesConfig`` for 4-bit NF4 with double quantization (QLoRA's, and Unsloth's).

    Args:
        compute_dtype: The dtype the 4-bit matmuls compute in (the model's 16-bit dtype).
    """
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


__all__ = ["DTYPE_NAMES", "auto_dtype", "nf4_config", "torch_dtype"]
