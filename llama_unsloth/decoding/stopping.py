"""Stopping generation at stop strings without a per-step cost on the GPU."""

from __future__ import annotations

from typing import Any, List, Sequence

from transformers import StoppingCriteria


class StopOnStrings(StoppingCriteria):
    """Ends each sequence once its generated text contains one of ``stops``.

    transformers' ``stop_strings`` builds its check from vocabulary-sized tensors every step; this decodes
    only the last few generated tokens of each row on the CPU, which costs one small copy per step.

    Args:
        tokenizer: The model's tokenizer.
        stops: Strings that end generation.
        prompt_width: Width of the (left-padded) prompt batch: only tokens after it are generated text.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stops: List[str] = [s for s in stops if s]
        self.prompt_width = prompt_width
        # A stop string spans at most this many tokens (+2 for pieces merged across its edges): as many as its
        # UTF-8 bytes, since a model may spell it in other pieces than the tokenizer's own (every piece adds a byte).
        self.window = (
            max(
                (max(len(tokenizer.encode(s, add_special_tokens=False)), len(s.encode("utf-8"))) for s in self.stops),
                default=0,
            )
            + 2
        )

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        start = max(self.prompt_width, input_ids.shape[1] - self.window)
        tails = input_ids[:, start:].tolist()
        done = [
            any(stop in self.tokenizer.decode(tail, skip_special_tokens=False) for stop in self.stops)
            for tail in tails
        ]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
