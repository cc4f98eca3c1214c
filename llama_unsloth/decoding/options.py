"""What the fast decode path accepts: its weights and modes, the ``generate`` options its loop implements.

Every check here answers with a reason (a string) or None, never raises: where the fast path cannot run, or a
call asks for an option the loop does not implement, the caller warns once and answers through
``model.generate`` (:mod:`llama_unsloth.decoding.fast_path`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

WEIGHTS = ("bf16", "int8", "int4")
MODES = ("compile", "graphs", "eager")

# generate() options the fast loop implements; any other one sends that call to model.generate.
SUPPORTED_KWARGS = frozenset(
    {
        "max_new_tokens",
        "min_new_tokens",
        "pad_token_id",
        "eos_token_id",
        "do_sample",
        "temperature",
        "top_p",
        "top_k",
        "stopping_criteria",
        "streamer",
        "use_cache",
        "tokenizer",
        "num_beams",
    }
)
DEFAULT_MAX_NEW_TOKENS = 20  # generate()'s own default


def weights_error(value: Any) -> Optional[str]:
    """The message for a bad ``weights`` value, or None when it is fine."""
    if value is None or value in WEIGHTS:
        return None
    return (
        f"Unknown weights={value!r} (UnslothLLM field 'weights'): choose 'bf16' (the merged 16-bit model), "
        "'int8' or 'int4' (torchao weight-only), or leave it None, together with fast_decode=True."
    )


def cuda_reason(weights: Optional[str] = None) -> Optional[str]:
    """Why the compiled/graph path cannot run on this machine, or None."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is available"
    major, minor = torch.cuda.get_device_capability()
    if weights == "int4" and major < 8:
        return f"int4 weights need a GPU of compute capability 8.0 or newer (this one is {major}.{minor})"
    if weights in ("int4", "int8"):
        try:
            import torchao  # noqa: F401
        except Exception as err:  # ImportError, or a torchao built for another torch
            return f"{weights} weights need torchao (pip install torchao): {type(err).__name__}: {err}"
    return None


def unsupported_option(kwargs: Dict[str, Any]) -> Optional[str]:
    """Why the fast loop cannot answer a ``generate`` call with these options (beam search, others), or None."""
    extra = sorted(k for k, v in kwargs.items() if k not in SUPPORTED_KWARGS and v is not None)
    if extra:
        return "generate option(s) " + ", ".join(extra) + " are not implemented by the fast decode loop"
    if int(kwargs.get("num_beams") or 1) > 1:
        return "beam search is not implemented by the fast decode loop"
    return None


def max_new_tokens(kwargs: Dict[str, Any]) -> int:
    """The number of tokens a ``generate`` call asks for (generate's default where it says nothing)."""
    return int(kwargs.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)


@dataclass
class GenerateOptions:
    """The ``generate`` options of one call, as the fast loop reads them (see :data:`SUPPORTED_KWARGS`)."""

    max_new_tokens: int
    min_new_tokens: int
    pad_token_id: int
    eos_token_ids: List[int]
    stopping_criteria: Sequence[Any]
    streamer: Any
    do_sample: bool
    temperature: float
    top_k: Optional[int]
    top_p: Optional[float]

    @classmethod
    def from_kwargs(cls, kwargs: Dict[str, Any], default_top_k: Optional[int] = None) -> GenerateOptions:
        """Reads ``kwargs`` with ``generate``'s defaults.

        Args:
            kwargs: The call's ``generate`` keyword arguments.
            default_top_k: The model's ``generation_config.top_k``: what sampling uses where the call gives none.
        """
        eos = kwargs.get("eos_token_id")
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        pad_id = kwargs.get("pad_token_id")
        sample = bool(kwargs.get("do_sample"))
        return cls(
            max_new_tokens=max_new_tokens(kwargs),
            min_new_tokens=int(kwargs.get("min_new_tokens") or 0),
            # As generate: no pad id means the first EOS id pads finished rows.
            pad_token_id=pad_id if pad_id is not None else (eos_ids[0] if eos_ids else 0),
            eos_token_ids=eos_ids,
            stopping_criteria=kwargs.get("stopping_criteria") or [],
            streamer=kwargs.get("streamer"),
            do_sample=sample,
            temperature=float(kwargs.get("temperature") or 1.0),
            top_k=kwargs.get("top_k", default_top_k) if sample else None,
            top_p=kwargs.get("top_p"),
        )


__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "MODES",
    "SUPPORTED_KWARGS",
    "WEIGHTS",
    "GenerateOptions",
    "cuda_reason",
    "max_new_tokens",
    "unsupported_option",
    "weights_error",
]
