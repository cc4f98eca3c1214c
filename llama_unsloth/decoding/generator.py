"""The standard generator: transformers' ``model.generate`` over left-padded batches, one call at a time per model.

:class:`~llama_unsloth.llms.unsloth.UnslothLLM` hands every generation here; where its fast path is on
(:class:`~llama_unsloth.decoding.fast_path.FastPath`), that path answers first and this is its fallback.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple

from llama_unsloth.errors import GenerationOutOfMemoryError

# One generation at a time per model object, however many LLM wrappers share it.
_MODEL_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def lock_for(model: Any) -> threading.Lock:
    """The lock that serialises generation on ``model`` (held weakly: it goes with the model)."""
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = threading.Lock()
            _MODEL_LOCKS[model] = lock
        return lock


def left_padded(input_ids: Sequence[Sequence[int]], pad_id: Optional[int], device: Any) -> Dict[str, Any]:
    """``input_ids`` and ``attention_mask`` of a left-padded batch on ``device``.

    Padded here, not by ``tokenizer.pad``: the pad id may have been replaced by one the model has a row for.
    """
    import torch

    width = max(len(ids) for ids in input_ids)
    pad = pad_id if pad_id is not None else 0
    batch = {
        "input_ids": torch.tensor([[pad] * (width - len(ids)) + list(ids) for ids in input_ids]),
        "attention_mask": torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in input_ids]),
    }
    return {k: v.to(device) for k, v in batch.items()}


def with_stop_strings(kwargs: Dict[str, Any], tokenizer: Any, prompt_width: int) -> Dict[str, Any]:
    """``kwargs`` with ``stop_strings`` turned into a :class:`StopOnStrings` criterion (cheaper per step)."""
    kwargs = dict(kwargs)
    stops = kwargs.pop("stop_strings", None)
    if stops:
        from transformers import StoppingCriteriaList

        from llama_unsloth.decoding.stopping import StopOnStrings

        kwargs.pop("tokenizer", None)
        criteria = StoppingCriteriaList(kwargs.pop("stopping_criteria", None) or [])
        criteria.append(StopOnStrings(tokenizer, stops, prompt_width))
        kwargs["stopping_criteria"] = criteria
    return kwargs


def model_device(model: Any) -> Any:
    """Where the model's inputs go."""
    return getattr(model, "device", None) or next(model.parameters()).device


def generate(
    model: Any,
    tokenizer: Any,
    input_ids: Sequence[Sequence[int]],
    kwargs: Dict[str, Any],
    pad_id: Optional[int],
    fast: Any = None,
) -> Tuple[Any, int]:
    """Generates for a batch of prompts: ``(output ids, prompt width)``; prompts are left-padded to that width.

    Args:
        model: The causal LM.
        tokenizer: Its tokenizer (for stop strings).
        input_ids: The prompts' token ids.
        kwargs: ``generate`` keyword arguments (``stop_strings`` included).
        pad_id: The id prompts are padded with.
        fast: A :class:`~llama_unsloth.decoding.fast_path.FastPath` to try first, or None.

    Raises:
        GenerationOutOfMemoryError: The GPU ran out of memory (the cache is freed first).
    """
    import torch

    batch = left_padded(input_ids, pad_id, model_device(model))
    width = int(batch["input_ids"].shape[1])
    kwargs = with_stop_strings(kwargs, tokenizer, width)
    try:
        if fast is not None:
            output = fast.generate(batch, kwargs)
            if output is not None:
                return output, width
        with torch.inference_mode():
            return model.generate(**batch, **kwargs), width
    except torch.cuda.OutOfMemoryError as err:
        del batch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise GenerationOutOfMemoryError(
            f"The GPU ran out of memory while generating ({err}). The cache was freed; retry with a lower "
            "max_new_tokens, a smaller batch_size, or less context (lower similarity_top_k)."
        ) from err


def count_until_end(new_ids: List[int], end_ids: Sequence[int], pad_id: Optional[int]) -> int:
    """How many generated tokens count: up to and including the first end token, else all but padding."""
    for index, token in enumerate(new_ids):
        if token in end_ids:
            return index + 1
    return sum(1 for t in new_ids if t != pad_id)


def free_cuda_cache() -> None:
    """Collects garbage and empties CUDA's cache (after a failed fast-path load)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = ["count_until_end", "free_cuda_cache", "generate", "left_padded", "lock_for", "with_stop_strings"]
