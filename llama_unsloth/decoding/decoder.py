"""The fast decode loop: a static KV cache per length bucket, one CUDA graph per bucket of the per-token step.

Where the time goes at batch 1 is per-token launch overhead, not the GPU (issue 13): ``model.generate`` with
a dynamic cache launches hundreds of small kernels per token from Python. :class:`FastDecoder` decodes with

* a transformers ``StaticCache`` per *bucket* (:mod:`llama_unsloth.decoding.buckets`): prompts of any length
  reuse one graph per (batch bucket, length bucket);
* one CUDA graph per bucket of the per-token step (the model forward on one token, its attention mask and
  the position bump). ``mode="compile"`` runs that step through ``torch.compile`` (inductor, fused kernels)
  before capture; ``mode="graphs"`` captures the eager step (warm-up in about a second, no compile);
  ``mode="eager"`` runs the same static-cache loop with neither (CPU; what CI tests);
* the model's weights as :mod:`llama_unsloth.decoding.weights` left them (int4 prompts through
  :mod:`llama_unsloth.decoding.tinygemm`), attention of the new token through
  :mod:`llama_unsloth.decoding.attention`.

The loop, as gpt-fast's ``generate.py``: :meth:`FastDecoder._prefill` runs the prompt,
:meth:`FastDecoder._decode_one_token` one token for every row, :meth:`FastDecoder._decode_n_tokens` the rest.
It mirrors ``generate``: greedy or sampling (:mod:`llama_unsloth.decoding.sampling`), ``min_new_tokens``, EOS
ids, ``stopping_criteria`` (our stop strings), a ``streamer``, and rows that finished emit the pad token. One
step is queued on the GPU before the host checks the previous token, so the host checks cost no GPU time.

Nothing here raises at question time for a reason the standard path does not have: where compile or capture
fails, :class:`FastDecodeUnavailable` (before any token) tells the caller to answer through ``model.generate``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from llama_unsloth.decoding.attention import (
    DECODE_ATTENTION,
    full_attention_config,
    sliding_window,
    use_grouped_decode_attention,
)
from llama_unsloth.decoding.buckets import MIN_BUCKET, batch_bucket, bucket_for, warm_up_lengths
from llama_unsloth.decoding.options import MODES, GenerateOptions, max_new_tokens, unsupported_option
from llama_unsloth.decoding.pristine import foreign_forwards
from llama_unsloth.decoding.sampling import next_tokens
from llama_unsloth.errors import FastDecodeUnavailable

# Inductor options for the compiled step, as in gpt-fast and torchao's generate.py: coordinate-descent tuning
# of each fused kernel's launch settings pays at batch 1, where every kernel is small. Passed per compile, so
# the user's own torch.compile calls keep their settings.
COMPILE_OPTIONS: Dict[str, Any] = {"coordinate_descent_tuning": True}


@dataclass
class _Slot:
    """The static cache, input buffers and captured graph of one (batch bucket, length bucket)."""

    batch: int
    length: int
    cache: Any
    tokens: Any  # [B, 1] the token fed to the next step
    positions: Any  # [B, 1] its position id
    step: Any  # [1] the cache index it is written to
    pad_mask: Any  # [B, L] bool: False on left padding
    kv_index: Any  # [L]
    graph: Any = None
    logits: Any = None  # the captured step's output


@dataclass
class FastDecodeStats:
    """What the fast path did: graphs captured, torch.compile compilations, warm-up and compile seconds."""

    mode: str = ""
    weights: str = ""
    attention: str = ""
    prefill: str = ""
    graphs: int = 0
    compiles: int = 0
    capture_seconds: float = 0.0
    fast_calls: int = 0
    fallback_calls: int = 0
    slots: List[Tuple[int, int]] = field(default_factory=list)
    disabled: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        """The stats as a plain dict (``UnslothLLM.fast_decode_stats()``)."""
        return {
            "mode": self.mode,
            "weights": self.weights,
            "attention": self.attention,
            "prefill": self.prefill,
            "graphs": self.graphs,
            "compiles": self.compiles,
            "capture_seconds": round(self.capture_seconds, 2),
            "fast_calls": self.fast_calls,
            "fallback_calls": self.fallback_calls,
            "slots": list(self.slots),
            "disabled": self.disabled,
        }


@dataclass
class _Call:
    """The host side of one ``generate`` call: the output ids so far, and which rows have finished."""

    options: GenerateOptions
    batch: int  # the caller's rows; the slot's extra rows are copies of the first, finished from the start
    width: int  # the prompt's width
    out: Any  # [batch, width + max_new_tokens] on the CPU: the prompt, then the new ids (pad after the end)
    finished: Any  # [rows] bool on the CPU
    finished_dev: Any  # the same on the model's device, where the next token is picked
    eos: Any  # the EOS ids on the model's device, or None
    host: Any  # [rows] the latest token, copied from the device (pinned memory on CUDA)
    copied: Any  # the CUDA event of that copy; None on the CPU
    n_new: int = 0

    @classmethod
    def start(cls, input_ids: Any, rows: int, options: GenerateOptions, device: Any) -> _Call:
        """The state of a call on ``input_ids`` ``[batch, width]`` run in a slot of ``rows`` rows."""
        import torch

        batch, width = input_ids.shape
        out = torch.full((batch, width + options.max_new_tokens), options.pad_token_id, dtype=torch.long)
        out[:, :width] = input_ids.cpu()
        finished = torch.zeros(rows, dtype=torch.bool)
        finished[batch:] = True
        on_cuda = device.type == "cuda"
        eos_ids = options.eos_token_ids
        return cls(
            options=options,
            batch=batch,
            width=width,
            out=out,
            finished=finished,
            finished_dev=finished.to(device),
            eos=torch.tensor(eos_ids, dtype=torch.long, device=device) if eos_ids else None,
            host=torch.empty((rows,), dtype=torch.long, pin_memory=on_cuda),
            copied=torch.cuda.Event() if on_cuda else None,
        )

    def copy_to_host(self, token: Any) -> None:
        """Starts copying ``token`` to the host without waiting for it (read by :meth:`receive`)."""
        self.host.copy_(token, non_blocking=self.copied is not None)
        if self.copied is not None:
            self.copied.record()

    def receive(self, index: int) -> Any:
        """Waits for new token ``index``, records and streams it; which rows are done after it (``[rows]`` bool)."""
        import torch

        if self.copied is not None:
            self.copied.synchronize()
        new = self.host[: self.batch].clone()
        self.out[:, self.width + index] = new
        self.n_new = index + 1
        if self.options.streamer is not None:
            self.options.streamer.put(new)
        done = self.finished.clone()
        if self.options.eos_token_ids:
            done[: self.batch] |= torch.isin(new, torch.tensor(self.options.eos_token_ids))
        for criterion in self.options.stopping_criteria:
            done[: self.batch] |= criterion(self.out[:, : self.width + self.n_new], None).to(torch.bool).cpu()
        return done

    def update_finished(self, done: Any) -> None:
        """Marks rows ``done`` finished (they emit the pad token from now on); copies to the device only on change."""
        import torch

        if not torch.equal(done, self.finished):
            self.finished = done
            self.finished_dev.copy_(done.to(self.finished_dev.device))

    def output(self) -> Any:
        """The prompt and the new ids, ``[batch, width + new tokens]``."""
        return self.out[:, : self.width + self.n_new]


def _dynamo_frames() -> int:
    """How many graphs dynamo has compiled in this process (0 where its counters cannot be read)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"].get("unique_graphs", 0))  # one per graph dynamo compiled
    except Exception:
        return 0


class FastDecoder:
    """Static-cache decoding of one model, in CUDA graphs per length bucket (``mode`` as in the module doc).

    Args:
        model: A transformers causal LM running transformers' own code (see :func:`foreign_forwards`).
        max_seq_length: The longest prompt + answer; the largest bucket.
        mode: ``compile``, ``graphs`` or ``eager`` (the last runs anywhere, CPU included).
        weights: A label for the stats (the weights are already in place).
        min_bucket: The smallest cache length.
        compile_options: Inductor options for ``mode="compile"`` (default :data:`COMPILE_OPTIONS`).

    Raises:
        FastDecodeUnavailable: The model is not on a CUDA GPU (modes but ``eager``) or runs foreign code.

    Call :meth:`generate` under the model's generation lock (``UnslothLLM`` does).
    """

    def __init__(
        self,
        model: Any,
        max_seq_length: int,
        mode: str = "compile",
        weights: str = "bf16",
        min_bucket: int = MIN_BUCKET,
        compile_options: Optional[Dict[str, Any]] = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"Unknown fast decode mode {mode!r}: choose one of {', '.join(MODES)}.")
        self.model = model
        self.max_seq_length = max_seq_length
        self.mode = mode
        self.min_bucket = min(min_bucket, max_seq_length)
        self.device = next(model.parameters()).device
        if mode != "eager" and self.device.type != "cuda":
            raise FastDecodeUnavailable(f"mode={mode!r} needs the model on a CUDA GPU (it is on {self.device.type})")
        foreign = foreign_forwards(model)
        if foreign:
            raise FastDecodeUnavailable(
                "the model runs code outside transformers (an Unsloth-patched model?): " + ", ".join(foreign[:4])
            )
        self.stats = FastDecodeStats(mode=mode, weights=weights)
        self.stats.attention = (
            DECODE_ATTENTION if use_grouped_decode_attention(model) else model.config._attn_implementation
        )
        # Our static-cache mask has no sliding window: calls longer than the model's window take generate(), and
        # no cache is longer than the window, so inside it sliding layers are full-attention layers (same result)
        # and get plain static layers (transformers' sliding ones keep a Python-int length that CUDA graphs freeze).
        self.sliding_window = sliding_window(model.config)
        if self.sliding_window:
            self.max_seq_length = min(self.max_seq_length, self.sliding_window)
            self.min_bucket = min(self.min_bucket, self.max_seq_length)
        self._cache_config = full_attention_config(model.config) if self.sliding_window else model.config
        # int4 prompts: tinygemm is slow at hundreds of rows; each weight is unpacked to bf16 for its prompt matmul.
        from llama_unsloth.decoding import tinygemm

        self._prefill_mode = tinygemm.prefill_mode(model, compile=mode == "compile") if weights == "int4" else None
        self.stats.prefill = "int4 unpacked to bf16" if self._prefill_mode is not None else "model weights"
        self._slots: Dict[Tuple[int, int], _Slot] = {}
        self._pool = None
        self._step_fn = self._compiled_step(compile_options) if mode == "compile" else self._forward_step

    def _compiled_step(self, compile_options: Optional[Dict[str, Any]]) -> Any:
        """:meth:`_forward_step` through ``torch.compile`` (one graph per bucket, no dynamic shapes)."""
        import torch

        try:
            # Each (batch, length) bucket is one more compilation of this function: dynamo's default limit (8)
            # would leave the later buckets uncompiled.
            limit = max(int(getattr(torch._dynamo.config, "recompile_limit", 8)), 64)
            torch._dynamo.config.recompile_limit = limit
        except Exception:
            pass
        return torch.compile(
            self._forward_step, fullgraph=True, dynamic=False, options=dict(compile_options or COMPILE_OPTIONS)
        )

    # -------------------------------------------------------------- the step that is compiled / captured
    def _forward_step(self, tokens: Any, positions: Any, mask: Any, cache: Any) -> Any:
        """The model forward through the static cache: the last position's logits, float."""
        out = self.model(
            input_ids=tokens,
            position_ids=positions,
            attention_mask=mask,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :].float()

    def _decode_step(self, slot: _Slot) -> Any:
        """One token for every row: the attention mask, the forward, and the position bump (all capturable)."""
        mask = (slot.kv_index[None, :] <= slot.step) & slot.pad_mask
        logits = self._step_fn(slot.tokens, slot.positions, mask[:, None, None, :], slot.cache)
        slot.step.add_(1)
        slot.positions.add_(1)
        return logits

    # -------------------------------------------------------------- slots and graphs
    def _slot(self, batch: int, length: int) -> _Slot:
        """The slot of this (batch bucket, length bucket), built (and captured) the first time."""
        key = (batch, length)
        slot = self._slots.get(key)
        if slot is not None:
            return slot
        import torch
        from transformers import StaticCache

        dev = self.device
        cache = StaticCache(config=self._cache_config, max_cache_len=length)
        with torch.inference_mode():
            slot = self._new_slot(batch, length, cache, dev)
        return self._ready(key, slot)

    def _new_slot(self, batch: int, length: int, cache: Any, dev: Any) -> _Slot:
        """A slot's buffers on ``dev``: the graph reads and writes these same tensors on every replay."""
        import torch

        return _Slot(
            batch=batch,
            length=length,
            cache=cache,
            tokens=torch.zeros((batch, 1), dtype=torch.long, device=dev),
            positions=torch.zeros((batch, 1), dtype=torch.long, device=dev),
            step=torch.zeros((1,), dtype=torch.long, device=dev),
            pad_mask=torch.ones((batch, length), dtype=torch.bool, device=dev),
            kv_index=torch.arange(length, device=dev),
        )

    def _ready(self, key: Tuple[int, int], slot: _Slot) -> _Slot:
        """Allocates the slot's cache and captures its step (modes but eager); keeps it and counts the work."""
        import torch

        batch = key[0]
        dev = self.device
        began = time.perf_counter()
        frames = _dynamo_frames()
        try:
            with torch.inference_mode():
                # A prefill of one token allocates the cache tensors (outside any graph: their addresses stay fixed).
                one = torch.zeros((batch, 1), dtype=torch.long, device=dev)
                self._prefill(slot, one, torch.ones_like(one))
                if self.mode != "eager":
                    self._capture(slot)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as err:  # compile or capture failed: the caller falls back to generate()
            raise FastDecodeUnavailable(
                f"building the {self.mode} decode step for batch {batch}, cache {key[1]} failed: {type(err).__name__}: {err}"
            ) from err
        self.stats.compiles += _dynamo_frames() - frames
        self.stats.capture_seconds += time.perf_counter() - began
        self._slots[key] = slot
        self.stats.slots.append(key)
        return slot

    def _capture(self, slot: _Slot) -> None:
        """Captures the slot's :meth:`_decode_step` in a CUDA graph (all graphs share one memory pool)."""
        import torch

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # compiles (mode=compile), autotunes, and settles the allocator
                self._decode_step(slot)
        torch.cuda.current_stream().wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            slot.logits = self._decode_step(slot)
        slot.graph = graph
        self.stats.graphs += 1
        torch.cuda.synchronize()

    # -------------------------------------------------------------- the decode loop
    def _prefill(self, slot: _Slot, ids: Any, pad_mask_prompt: Any) -> Any:
        """Resets the slot's cache and runs the prompt (eager); returns the last position's logits."""
        import torch

        slot.cache.reset()
        width = ids.shape[1]
        slot.pad_mask.fill_(True)
        slot.pad_mask[:, :width] = pad_mask_prompt.to(torch.bool)
        positions = pad_mask_prompt.long().cumsum(-1) - 1
        positions = positions.masked_fill(pad_mask_prompt == 0, 0)
        causal = slot.kv_index[None, :] <= torch.arange(width, device=self.device)[:, None]  # [W, L]
        mask = causal[None, None, :, :] & slot.pad_mask[:, None, None, :]
        with self._prefill_mode or contextlib.nullcontext():
            logits = self._forward_step(ids, positions, mask, slot.cache)
        slot.step.fill_(width)
        slot.positions.copy_(positions[:, -1:] + 1)
        return logits

    def _decode_one_token(self, slot: _Slot) -> Any:
        """Queues one step for every row of the slot (the graph's replay where captured); its logits."""
        if slot.graph is not None:
            slot.graph.replay()
            return slot.logits
        return self._decode_step(slot)

    def _decode_n_tokens(self, slot: _Slot, token: Any, call: _Call) -> None:
        """Feeds ``token`` (the prompt's next token) and decodes until every row is done or ``max_new_tokens``."""
        max_new = call.options.max_new_tokens
        for index in range(max_new):
            slot.tokens.copy_(token[:, None])
            call.copy_to_host(token)
            more = index + 1 < max_new
            if more:  # queue the next step before the host looks at this token
                logits = self._decode_one_token(slot)
            done = call.receive(index)
            if done.all() or not more:
                break
            call.update_finished(done)
            token = next_tokens(logits, index + 1, call.options, call.eos, call.finished_dev)

    def _inputs(self, input_ids: Any, attention_mask: Any, rows: int) -> Tuple[Any, Any]:
        """The prompt ids and padding mask on the device, with filler rows (copies of the first) up to ``rows``."""
        import torch

        batch = input_ids.shape[0]
        ids = input_ids.to(self.device)
        mask = attention_mask.to(self.device) if attention_mask is not None else torch.ones_like(ids)
        if rows > batch:
            ids = torch.cat([ids, ids[:1].expand(rows - batch, -1)])
            mask = torch.cat([mask, mask[:1].expand(rows - batch, -1)])
        return ids, mask

    # -------------------------------------------------------------- public
    def unsupported(self, kwargs: Dict[str, Any], prompt_tokens: int = 0) -> Optional[str]:
        """Why this ``generate`` call (of ``prompt_tokens`` prompt tokens) must go to ``model.generate``, or None."""
        reason = unsupported_option(kwargs)
        if reason is not None:
            return reason
        total = prompt_tokens + max_new_tokens(kwargs)
        if self.sliding_window and total > self.max_seq_length:
            return (
                f"prompt + max_new_tokens ({total}) exceed the model's sliding attention window "
                f"({self.sliding_window}), which the fast decode loop's mask does not implement"
            )
        return None

    def warm_up(
        self, prompt_tokens: Optional[Sequence[int]] = None, batch_sizes: Sequence[int] = (1,), max_new_tokens: int = 0
    ) -> Dict[str, Any]:
        """Builds (compiles, captures) the graphs now; by default every length bucket at batch 1."""
        lengths = warm_up_lengths(prompt_tokens, max_new_tokens, self.max_seq_length, self.min_bucket)
        began = time.perf_counter()
        for batch in batch_sizes:
            for length in lengths:
                self._slot(batch_bucket(batch), length)
        result = self.stats.as_dict()
        result["warm_up_seconds"] = round(time.perf_counter() - began, 2)
        return result

    def generate(self, input_ids: Any, attention_mask: Any, kwargs: Dict[str, Any]) -> Any:
        """Like ``model.generate(input_ids=..., attention_mask=..., **kwargs)``: prompt + new ids, on the CPU.

        Raises:
            FastDecodeUnavailable: Building this call's slot failed (before any token): answer through ``generate``.
        """
        import torch

        default_top_k = getattr(getattr(self.model, "generation_config", None), "top_k", None)
        options = GenerateOptions.from_kwargs(kwargs, default_top_k=default_top_k)
        batch, width = input_ids.shape
        rows = batch_bucket(batch)
        slot = self._slot(rows, bucket_for(width + options.max_new_tokens, self.max_seq_length, self.min_bucket))
        ids, mask = self._inputs(input_ids, attention_mask, rows)
        call = _Call.start(input_ids, rows, options, self.device)
        self.stats.fast_calls += 1
        if options.streamer is not None:
            options.streamer.put(input_ids.cpu())
        with torch.inference_mode():
            token = next_tokens(self._prefill(slot, ids, mask), 0, options, call.eos, call.finished_dev)
            self._decode_n_tokens(slot, token, call)
        if self.device.type == "cuda":
            torch.cuda.current_stream().synchronize()
        if options.streamer is not None:
            options.streamer.end()
        return call.output()


__all__ = ["COMPILE_OPTIONS", "FastDecodeStats", "FastDecoder"]
