"""How much GPU memory a LoRA fine-tune will need, from the model's ``config.json``, before it loads.

A CUDA out-of-memory error twenty minutes into a run (after the model loaded and the first steps
compiled) is the failure our users hit most on a 22 GB L4. The finetune recipe prints this estimate
with its plan and stops with a one-line error naming a setting that fits when the estimate exceeds
the GPU (or ``--gpu-memory-gib``).

The estimate adds what a QLoRA step holds at its peak:

* **weights**: 4-bit NF4 decoder projections (4.13 bits per weight with double quantization) and the
  16-bit embeddings, ``lm_head`` and norms; 16 bits for everything without 4-bit;
* **LoRA**: adapter weights and gradients in fp32, and the optimizer's two moments (1 byte each for
  ``adamw_8bit``, 4 bytes each otherwise);
* **activations**: per token, what one decoder layer recomputes during the backward pass (gradient
  checkpointing keeps only each layer's input: on the GPU for ``true``, in CPU memory for Unsloth's
  ``unsloth`` mode), plus the ``batch x seq x seq`` attention scores of architectures whose soft-capped
  attention cannot use a fused kernel (Gemma-2);
* **logits**: the loss's buffers, which grow with vocabulary x hidden size: Unsloth's fused cross-entropy
  works through the logits in chunks, so ``batch x seq x vocab`` is never held at once.

The per-token factors were measured on the GPU machine (``benchmarks/gpu/finetune_memory.py``,
BENCHMARKS.md "Fine-tune memory"); the test suite checks the estimate against those measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from llama_unsloth.models import read_model_config
from llama_unsloth.training.trainer import FUSED_MODULES, TARGET_MODULES

GIB = 2**30
# NF4 with double quantization: 4 bits per weight, an 8-bit absmax per 64 weights, an fp32 scale per 256 blocks.
NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)
# Fitted to the peaks measured on the GPU machine (benchmarks/results/gpu_finetune_memory.json: Gemma-2-27B and
# Mistral-Nemo-12B at full depth, 2048-token sequences, batch 1 and 2; the four architectures at 2 layers): bytes
# per token per unit of layer width while one layer is recomputed and back-propagated (Unsloth keeps each
# layer's input in CPU memory), and bytes per vocabulary x hidden entry for the chunked loss (Unsloth's fused
# cross-entropy never holds batch x seq x vocab logits). Every measured peak is at or below the estimate.
ACTIVATION_BYTES = 3.5
LOSS_BYTES_PER_VOCAB_HIDDEN = 0.65
# Soft-capped attention (Gemma-2) has no fused kernel there: fp32 scores, batch x heads x seq x seq, per layer.
SOFTCAP_SCORE_BYTES = 4
# Allocator slack (reserved beyond allocated) and fragmentation.
OVERHEAD_BYTES = 0.5 * GIB
OVERHEAD_FRACTION = 0.03

_PROJECTIONS = tuple(TARGET_MODULES)


@dataclass
class MemoryEstimate:
    """An estimated peak, in bytes, by part.

    Attributes:
        weights: Model weights on the GPU.
        lora: Adapter weights, gradients and optimizer state.
        activations: What the backward pass holds per step (recomputed layer, kept layer inputs, attention scores).
        logits: Logits and their gradient for the loss.
        overhead: Allocator slack and CUDA context.
    """

    weights: float
    lora: float
    activations: float
    logits: float
    overhead: float

    @property
    def total(self) -> float:
        """The whole estimated peak, in bytes."""
        return self.weights + self.lora + self.activations + self.logits + self.overhead

    @property
    def total_gib(self) -> float:
        """The whole estimated peak, in GiB."""
        return self.total / GIB

    def describe(self) -> str:
        """``about 19.8 GiB (weights 15.2, LoRA + optimizer 1.3, activations 1.9, logits 0.6, overhead 0.8)``."""
        parts = [
            ("weights", self.weights),
            ("LoRA + optimizer", self.lora),
            ("activations", self.activations),
            ("logits", self.logits),
            ("overhead", self.overhead),
        ]
        return f"about {self.total_gib:.1f} GiB (" + ", ".join(f"{n} {v / GIB:.1f}" for n, v in parts) + ")"


def _dims(config: Mapping[str, Any]) -> Dict[str, Any]:
    text = config.get("text_config") or config  # multimodal configs nest the language model's
    hidden = int(text["hidden_size"])
    heads = int(text["num_attention_heads"])
    head_dim = int(text.get("head_dim") or hidden // heads)
    return {
        "hidden": hidden,
        "layers": int(text["num_hidden_layers"]),
        "vocab": int(text["vocab_size"]),
        "intermediate": int(text["intermediate_size"]),
        "q": heads * head_dim,
        "kv": int(text.get("num_key_value_heads") or heads) * head_dim,
        "heads": heads,
        "tied": bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        "softcap": bool(text.get("attn_logit_softcapping")),
    }


def _projection_shapes(d: Mapping[str, Any]) -> Dict[str, Tuple[int, int]]:
    h, i = d["hidden"], d["intermediate"]
    return {
        "q_proj": (h, d["q"]),
        "k_proj": (h, d["kv"]),
        "v_proj": (h, d["kv"]),
        "o_proj": (d["q"], h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }


def _targets(target_modules: Any) -> List[str]:
    if isinstance(target_modules, str):  # "all-linear" or a regex: every projection
        return list(_PROJECTIONS)
    names = set(target_modules or ())
    # Fused projections (Phi-3) count as their parts.
    return [n for n in _PROJECTIONS if n in names or FUSED_MODULES.get(n) in names]


def estimate_finetune_memory(
    config: Mapping[str, Any],
    *,
    batch_size: int,
    seq_length: int,
    lora_r: int = 16,
    target_modules: Any = _PROJECTIONS,
    load_in_4bit: bool = True,
    optim: str = "adamw_8bit",
    gradient_checkpointing: str = "unsloth",
) -> MemoryEstimate:
    """Estimates the peak GPU memory of one LoRA training step.

    Args:
        config: The model's ``config.json`` as a dict.
        batch_size: Sequences per forward pass (``--per-device-train-batch-size``).
        seq_length: Tokens per sequence (``--max-seq-length``; sequences are assumed full length).
        lora_r: LoRA rank.
        target_modules: LoRA target module names.
        load_in_4bit: NF4 base weights (else 16-bit).
        optim: Optimizer name (8-bit optimizers keep 1-byte moments).
        gradient_checkpointing: ``unsloth`` (layer inputs offloaded to CPU), ``true`` or ``false``.

    Gradient accumulation does not change the peak; only the advice that keeps the effective batch uses it.
    """
    d = _dims(config)
    shapes = _projection_shapes(d)
    projection_weights = d["layers"] * sum(a * b for a, b in shapes.values())
    embeddings = d["vocab"] * d["hidden"] * (1 if d["tied"] else 2)
    norms = d["layers"] * 4 * d["hidden"]
    weights = projection_weights * (NF4_BYTES_PER_WEIGHT if load_in_4bit else 2) + (embeddings + norms) * 2

    adapter = d["layers"] * sum(lora_r * (shapes[n][0] + shapes[n][1]) for n in _targets(target_modules))
    moments = 2 * (1 if "8bit" in optim else 4)
    lora = adapter * (4 + 4 + moments)

    tokens = batch_size * seq_length
    width = 4 * d["hidden"] + 2 * d["q"] + 2 * d["kv"] + 4 * d["intermediate"]
    activations = tokens * width * ACTIVATION_BYTES
    checkpointing = str(gradient_checkpointing).lower()
    if checkpointing == "true":
        activations += tokens * d["hidden"] * 2 * d["layers"]  # each layer's input stays on the GPU
    elif checkpointing == "false":
        activations *= d["layers"]
    if d["softcap"]:
        activations += batch_size * d["heads"] * seq_length * seq_length * SOFTCAP_SCORE_BYTES
    logits = d["vocab"] * d["hidden"] * LOSS_BYTES_PER_VOCAB_HIDDEN
    subtotal = weights + lora + activations + logits
    return MemoryEstimate(weights, lora, activations, logits, OVERHEAD_BYTES + OVERHEAD_FRACTION * subtotal)


def settings_that_fit(
    config: Mapping[str, Any],
    budget_bytes: float,
    *,
    batch_size: int,
    seq_length: int,
    gradient_accumulation_steps: int = 1,
    **kwargs: Any,
) -> List[Tuple[str, MemoryEstimate]]:
    """Alternatives that fit ``budget_bytes``, as option strings: a smaller batch (same effective batch
    through more accumulation), then shorter sequences. The first is the least change."""
    found: List[Tuple[str, MemoryEstimate]] = []
    batch = batch_size
    while batch > 1:
        batch //= 2
        estimate = estimate_finetune_memory(config, batch_size=batch, seq_length=seq_length, **kwargs)
        if estimate.total <= budget_bytes:
            accumulation = gradient_accumulation_steps * (batch_size // batch)
            found.append(
                (f"--per-device-train-batch-size {batch} --gradient-accumulation-steps {accumulation}", estimate)
            )
            break
    seq = seq_length
    while seq > 256:
        seq = int(2 ** math.floor(math.log2(seq - 1)))
        estimate = estimate_finetune_memory(config, batch_size=1, seq_length=seq, **kwargs)
        if estimate.total <= budget_bytes:
            accumulation = gradient_accumulation_steps * batch_size
            found.append(
                (
                    f"--per-device-train-batch-size 1 --gradient-accumulation-steps {accumulation} "
                    f"--max-seq-length {seq}",
                    estimate,
                )
            )
            break
    return found


def fit_advice(
    config: Mapping[str, Any], budget_bytes: float, *, batch_size: int, seq_length: int, **kwargs: Any
) -> str:
    """``use --per-device-train-batch-size 1 (...) (about 18.2 GiB) or ...``: what to change so the run fits."""
    fixes = settings_that_fit(config, budget_bytes, batch_size=batch_size, seq_length=seq_length, **kwargs)
    if not fixes:
        return "no batch or sequence setting fits; use a smaller model or a GPU with more memory"
    return "use " + " or ".join(f"{option} (about {e.total_gib:.1f} GiB)" for option, e in fixes)


def plan_message(
    config: Mapping[str, Any],
    budget_bytes: float,
    budget_source: str,
    *,
    batch_size: int,
    seq_length: int,
    gradient_accumulation_steps: int = 1,
    **kwargs: Any,
) -> Tuple[MemoryEstimate, Optional[str]]:
    """The estimate, and an error line when it exceeds ``budget_bytes`` (``None`` when it fits).

    Args:
        config: The model's ``config.json``.
        budget_bytes: GPU memory the run may use.
        budget_source: Where the budget came from, for the message (``"this GPU"``, ``"--gpu-memory-gib 22"``).
        batch_size: Sequences per forward pass.
        seq_length: Tokens per sequence.
        gradient_accumulation_steps: Kept x batch size in the advice (the effective batch stays the same).
        **kwargs: Passed to :func:`estimate_finetune_memory`.
    """
    estimate = estimate_finetune_memory(config, batch_size=batch_size, seq_length=seq_length, **kwargs)
    if estimate.total <= budget_bytes:
        return estimate, None
    advice = fit_advice(
        config,
        budget_bytes,
        batch_size=batch_size,
        seq_length=seq_length,
        gradient_accumulation_steps=gradient_accumulation_steps,
        **kwargs,
    )
    error = (
        f"fine-tuning needs {estimate.describe()} at batch {batch_size} x {seq_length} tokens, more than the "
        f"{budget_bytes / GIB:.1f} GiB of {budget_source}: {advice}; --no-memory-check skips this check."
    )
    return estimate, error


def gpu_budget(gpu_memory_gib: Optional[float]) -> Optional[Tuple[float, str]]:
    """The memory a run may use and where that figure came from: ``--gpu-memory-gib``, else this GPU's free memory.

    Returns ``None`` on a machine without CUDA when no figure was given (nothing to plan against).
    """
    if gpu_memory_gib is not None:
        return gpu_memory_gib * GIB, f"--gpu-memory-gib {gpu_memory_gib:g}"
    from llama_unsloth.import_utils import cuda_available

    if not cuda_available():
        return None
    import torch

    free, total = torch.cuda.mem_get_info()
    return float(free), f"this GPU ({torch.cuda.get_device_name(0)}, {free / GIB:.1f} of {total / GIB:.1f} GiB free)"


def check_finetune_memory(
    model_name: str,
    *,
    gpu_memory_gib: Optional[float] = None,
    enforce: bool = True,
    batch_size: int,
    seq_length: int,
    **kwargs: Any,
) -> Optional[str]:
    """The memory plan line the finetune recipe prints; raises when the run will not fit.

    Args:
        model_name: Model folder, adapter folder or (cached) hub id whose ``config.json`` is read.
        gpu_memory_gib: Plan for a GPU of this size instead of the one here.
        enforce: Raise when the estimate exceeds the budget (``False``: only report).
        batch_size: Sequences per forward pass.
        seq_length: Tokens per sequence.
        **kwargs: Passed to :func:`estimate_finetune_memory` (``lora_r``, ``target_modules``, ``load_in_4bit`` ...).

    Returns:
        ``Memory plan: ...``, or ``None`` when there is nothing to plan against or no config to read.

    Raises:
        TrainingMemoryError: The estimate exceeds the budget (with ``enforce``); the message names a setting that fits.
    """
    budget = gpu_budget(gpu_memory_gib)
    config = read_model_config(model_name) if budget else None
    if budget is None or config is None:
        return None
    budget_bytes, source = budget
    try:
        estimate, error = plan_message(
            config, budget_bytes, source, batch_size=batch_size, seq_length=seq_length, **kwargs
        )
    except (KeyError, TypeError, ValueError):  # a config without the usual decoder fields: no estimate
        return None
    if error and enforce:
        from llama_unsloth.errors import TrainingMemoryError

        raise TrainingMemoryError(error)
    verdict = "fits" if error is None else "DOES NOT FIT (--no-memory-check: going on)"
    return f"Memory plan: {estimate.describe()} for batch {batch_size} x {seq_length} tokens; {verdict} {source}."


def out_of_memory_error(
    model_name: str, step: int, steps: int, *, batch_size: int, seq_length: int, **kwargs: Any
) -> Exception:
    """The error the finetune recipe raises instead of CUDA's out-of-memory traceback: where, and what fits."""
    import torch

    from llama_unsloth.errors import TrainingMemoryError

    on_gpu = torch.cuda.is_available()
    total = torch.cuda.get_device_properties(0).total_memory if on_gpu else None
    config = read_model_config(model_name)
    generic = (
        "use a smaller --per-device-train-batch-size with more --gradient-accumulation-steps, or a shorter "
        "--max-seq-length"
    )
    advice = (
        fit_advice(config, total, batch_size=batch_size, seq_length=seq_length, **kwargs)
        if config and total
        else generic
    )
    in_use = f" ({torch.cuda.max_memory_reserved() / GIB:.1f} of {total / GIB:.1f} GiB in use)" if total else ""
    return TrainingMemoryError(
        f"the GPU ran out of memory at step {step} of {steps} with batch {batch_size} x {seq_length} tokens"
        f"{in_use}; nothing was saved: {advice}."
    )


__all__ = [
    "MemoryEstimate",
    "check_finetune_memory",
    "estimate_finetune_memory",
    "fit_advice",
    "gpu_budget",
    "out_of_memory_error",
    "plan_message",
    "settings_that_fit",
]
