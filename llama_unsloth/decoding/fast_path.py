"""The fast path's policy, in one place: when it starts, when a call takes ``generate`` instead, when it stops.

Where the fast decoder cannot run (no CUDA, an unsupported GPU or setting, a failed compile) one warning
says why and the standard generator answers; the user's call never fails because of the fast path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

from llama_unsloth.decoding.decoder import FastDecoder
from llama_unsloth.decoding.generator import free_cuda_cache
from llama_unsloth.decoding.options import cuda_reason
from llama_unsloth.decoding.weights import load_fast_model, quantize_weights
from llama_unsloth.errors import FastDecodeUnavailable
from llama_unsloth.once import warn_once

logger = logging.getLogger(__name__)


@dataclass
class FastPathSettings:
    """What the fast path was asked for (``UnslothLLM``'s fields)."""

    weights: Optional[str] = None
    mode: str = "auto"
    dtype: Optional[str] = None
    max_seq_length: int = 2048
    trust_remote_code: bool = False

    @property
    def run_mode(self) -> str:
        """``auto`` means compile."""
        return "compile" if self.mode == "auto" else self.mode


class FastPath:
    """A :class:`~llama_unsloth.decoding.decoder.FastDecoder` and the rule that falls back to ``generate``.

    Build it with :meth:`start`; ``decoder`` is None once it has fallen back.
    """

    def __init__(self, decoder: Any) -> None:
        self.decoder: Optional[Any] = decoder

    @classmethod
    def start(
        cls, model_name: str, settings: FastPathSettings, given: Any = None
    ) -> Tuple[Optional[FastPath], Any, Any]:
        """Sets up the fast path: ``(path, model, tokenizer)``; ``(None, None, None)`` with one warning where it cannot run.

        Args:
            model_name: The model (or adapter) folder or hub id to load, unless ``given``.
            settings: Weights, mode, dtype and window.
            given: An already loaded model to run (its tokenizer is the caller's).
        """
        from llama_unsloth.models import torch_dtype

        mode = settings.run_mode
        reason = None if mode == "eager" and settings.weights in (None, "bf16") else cuda_reason(settings.weights)
        model = tokenizer = None
        if reason is None:
            try:
                if given is None:
                    dtype = None
                    if settings.dtype not in (None, "auto") or mode == "eager":
                        wanted = "bfloat16" if settings.weights == "bf16" else settings.dtype
                        dtype = torch_dtype(wanted, on_gpu=mode != "eager")
                    model, tokenizer = load_fast_model(
                        model_name, dtype=dtype, trust_remote_code=settings.trust_remote_code
                    )
                else:
                    model = given
                quantize_weights(model, settings.weights)
                decoder = FastDecoder(model, settings.max_seq_length, mode=mode, weights=settings.weights or "bf16")
            except Exception as err:  # noqa: BLE001 - any reason the path cannot run means the standard path
                reason = f"{type(err).__name__}: {err}" if not isinstance(err, FastDecodeUnavailable) else str(err)
                model = tokenizer = None
                free_cuda_cache()
        if reason is not None:
            warn_once(
                ("fast_decode", reason),
                f"fast_decode=True cannot run here ({reason}); answering through the standard generate path instead.",
            )
            return None, None, None
        return cls(decoder), model if given is None else given, tokenizer

    @property
    def stats(self) -> Dict[str, Any]:
        """Graphs captured, compilations, capture seconds and calls (``{}`` once fallen back)."""
        return self.decoder.stats.as_dict() if self.decoder is not None else {}

    def generate(self, batch: Dict[str, Any], kwargs: Dict[str, Any]) -> Any:
        """The fast path's output ids, or None where this call (or from now on, every call) takes ``generate``."""
        if self.decoder is None:
            return None
        reason = self.decoder.unsupported(kwargs, prompt_tokens=int(batch["input_ids"].shape[1]))
        if reason is not None:
            self.decoder.stats.fallback_calls += 1
            warn_once(
                ("fast_decode-call", reason), f"fast_decode: {reason}; those calls use the standard generate path."
            )
            return None
        try:
            return self.decoder.generate(batch["input_ids"], batch.get("attention_mask"), kwargs)
        except FastDecodeUnavailable as err:  # raised before any token was produced
            self.fall_back(str(err))
            return None

    def warm_up(
        self, prompt_tokens: Optional[Sequence[int]], batch_sizes: Sequence[int], max_new_tokens: int
    ) -> Dict[str, Any]:
        """Compiles and captures the graphs now; ``{}`` (and the standard path from now on) where that fails."""
        if self.decoder is None:
            return {}
        try:
            return self.decoder.warm_up(prompt_tokens, batch_sizes, max_new_tokens=max_new_tokens)
        except FastDecodeUnavailable as err:
            self.fall_back(str(err))
            return {}

    def fall_back(self, reason: str) -> None:
        """Stops the fast path for good (one warning): every later call takes ``generate``."""
        if self.decoder is not None:
            self.decoder.stats.disabled = reason
        self.decoder = None
        warn_once(
            ("fast_decode", reason),
            f"fast_decode stopped ({reason}); answering through the standard generate path instead.",
        )


__all__ = ["FastPath", "FastPathSettings"]
