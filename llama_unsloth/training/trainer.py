"""LoRA on a loaded model, TRL's ``SFTTrainer`` over the tokenized data, and what training did.

The settings come from :mod:`llama_unsloth.training.arguments` (TRL's own ``SFTConfig`` and
``ModelConfig`` with our users' defaults); this module only hands them to the libraries. What the run
did is read from the trainer's own ``state.log_history`` (:class:`TrainingSummary`), not from a
parallel record. Nothing here imports torch, transformers, peft or trl at module import: on a GPU
machine unsloth must be imported before them, which happens when the model is loaded.
"""

from __future__ import annotations

import copy
import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from llama_unsloth.models import auto_dtype

logger = logging.getLogger(__name__)

GRADIENT_CHECKPOINTING = ("unsloth", "true", "false")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


# ---------------------------------------------------------------------------------------------- LoRA
def add_lora(model: Any, backend: str, model_args: Any, max_seq_length: int = 2048) -> Any:
    """Wraps a loaded model with LoRA adapters, the way its backend does it.

    Args:
        model: Model from :func:`llama_unsloth.models.loading.load_model` (``for_training=True``).
        backend: ``unsloth`` (``FastLanguageModel.get_peft_model``) or ``transformers``
            (``peft.get_peft_model`` with the ``LoraConfig`` TRL's ``get_peft_config`` builds).
        model_args: A :class:`~llama_unsloth.training.arguments.LoraModelConfig` (TRL's ``ModelConfig``).
        max_seq_length: Longest training sequence (Unsloth sizes buffers with it).

    Returns:
        The PEFT model with only the adapter weights trainable.
    """
    checkpointing = str(model_args.use_gradient_checkpointing).lower()
    targets = model_args.lora_target_modules  # a list of names, or PEFT's "all-linear"
    if not isinstance(targets, str):
        targets = map_target_modules(model, list(targets))
        if targets != list(model_args.lora_target_modules):
            model_args = copy.copy(model_args)
            model_args.lora_target_modules = targets
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        _avoid_gemma2_block_compile(model)
        return FastLanguageModel.get_peft_model(
            model,
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
            bias="none",
            target_modules=targets if isinstance(targets, str) else list(targets),
            use_gradient_checkpointing={"unsloth": "unsloth", "true": True, "false": False}[checkpointing],
            random_state=model_args.random_state,
            use_rslora=model_args.use_rslora,
            max_seq_length=max_seq_length,
        )
    import torch
    from peft import get_peft_model
    from trl import get_peft_config

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing != "false")
    torch.manual_seed(model_args.random_state)
    return get_peft_model(model, get_peft_config(model_args))


# The seven projections our users' notebooks put LoRA on (the finetune recipe's default --target-modules).
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Fused projections some architectures have instead of the separate ones (Phi-3: qkv_proj, gate_up_proj).
FUSED_MODULES = {
    "q_proj": "qkv_proj",
    "k_proj": "qkv_proj",
    "v_proj": "qkv_proj",
    "gate_proj": "gate_up_proj",
    "up_proj": "gate_up_proj",
}


def linear_module_names(model: Any) -> List[str]:
    """The distinct last names of the model's linear layers (``q_proj``, ``qkv_proj``, ``lm_head`` ...)."""
    import torch

    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def map_target_modules(model: Any, requested: List[str]) -> List[str]:
    """LoRA target names mapped onto the layers the model has: q/k/v -> ``qkv_proj``, gate/up -> ``gate_up_proj``.

    PEFT adapts whatever matches and ignores the rest, so on Phi-3 the default seven names would adapt only
    ``o_proj`` and ``down_proj`` without a word.

    Raises:
        OptionError: A requested name matches no linear layer of the model (nor its fused counterpart).
    """
    from llama_unsloth.errors import OptionError

    present = linear_module_names(model)
    mapped: List[str] = []
    for name in requested:
        target = name if name in present else FUSED_MODULES.get(name)
        if target not in present:
            raise OptionError(
                f"--target-modules {name} matches no linear layer of this model; its linear layers are "
                f"{', '.join(present)}."
            )
        if target not in mapped:
            mapped.append(target)
    if mapped != list(dict.fromkeys(requested)):
        logger.info("LoRA targets %s -> %s (the layers this model has).", " ".join(requested), " ".join(mapped))
    return mapped


# Unsloth compiles each decoder block for training (torch >= 2.11). For Gemma-2 that compile fails in torch
# inductor at the first step (AssertionError in decompose_triton_kernel_wrapper_functional, pytorch/pytorch#181735)
# at every depth we tried (2 and 46 layers, H200, unsloth 2026.10.9, torch 2.11): BENCHMARKS.md "Our users'
# architectures". Unsloth's own switch turns that compile off; the rest of its kernels still run.
BLOCK_COMPILE_ENV = "UNSLOTH_BLOCK_COMPILE"
_NO_BLOCK_COMPILE = ("gemma2",)


def _avoid_gemma2_block_compile(model: Any) -> None:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in _NO_BLOCK_COMPILE and BLOCK_COMPILE_ENV not in os.environ:
        os.environ[BLOCK_COMPILE_ENV] = "0"
        logger.info(
            "Note: %s=0 for %s (Unsloth's per-block compile crashes torch inductor on this architecture); "
            "set %s=1 to try it anyway.",
            BLOCK_COMPILE_ENV,
            model_type,
            BLOCK_COMPILE_ENV,
        )


# ---------------------------------------------------------------------------------------------- resolution
def resolve_optimizer(optim: str) -> Tuple[str, Optional[str]]:
    """Returns the optimizer to use and a note when it had to change.

    bitsandbytes' 8-bit optimizers need CUDA: without it ``adamw_8bit`` (and other ``*8bit`` names)
    become ``adamw_torch``.
    """
    if "8bit" not in optim:
        return optim, None
    from llama_unsloth.import_utils import cuda_available, is_bitsandbytes_available

    if not cuda_available():
        return "adamw_torch", f"optimizer {optim} needs CUDA (bitsandbytes); using adamw_torch on this CPU machine."
    if not is_bitsandbytes_available():
        return "adamw_torch", f"optimizer {optim} needs bitsandbytes, which is not installed; using adamw_torch."
    return optim, None


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` where the GPU supports it, else ``fp16``; ``fp32`` on CPU.

    Raises:
        ValueError: Unknown name.
    """
    from llama_unsloth.import_utils import cuda_available

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    on_gpu = cuda_available()
    if precision == "auto":
        if not on_gpu:
            return "fp32"
        import torch

        # Mixed precision in the dtype the model gets on this GPU (one rule: models.auto_dtype).
        return "bf16" if auto_dtype(on_gpu=True) == torch.bfloat16 else "fp16"
    if precision in ("bf16", "fp16") and not on_gpu:
        logger.warning("precision %s needs a GPU for mixed-precision training; training in fp32.", precision)
        return "fp32"
    return precision


# ---------------------------------------------------------------------------------------------- trainer
def _callbacks() -> List[Any]:
    from transformers import TrainerCallback
    from transformers.trainer_callback import ProgressCallback

    class StepTimer(TrainerCallback):
        """Adds ``step_seconds`` (wall time of the optimizer step just logged) to the trainer's own log entry."""

        def __init__(self) -> None:
            self.began: Optional[float] = None
            self.seconds: Dict[int, float] = {}

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            self.began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            if self.began is not None:
                self.seconds[state.global_step] = time.perf_counter() - self.began

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
            # Trainer.log appended this entry to state.log_history just before calling us.
            entry = state.log_history[-1] if state.log_history else None
            if entry is not None and "loss" in entry and state.global_step in self.seconds:
                entry["step_seconds"] = round(self.seconds[state.global_step], 4)

    class QuietProgressCallback(ProgressCallback):
        """The Trainer's progress bar (with ETA), showing the loss on the bar instead of printing log dicts."""

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
            if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    return [StepTimer(), QuietProgressCallback()]


def build_trainer(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    training_args: Any,
    backend: str,
    use_gradient_checkpointing: str = "unsloth",
    callbacks: Optional[Sequence[Any]] = None,
) -> Any:
    """Builds TRL's ``SFTTrainer`` over the tokenized dataset, with a progress bar and per-step timings.

    Args:
        model: The PEFT model from :func:`add_lora`.
        tokenizer: Its tokenizer.
        dataset: Dataset of ``input_ids`` (:func:`~llama_unsloth.training.data.to_text_dataset`).
        training_args: An ``SFTConfig`` (:class:`~llama_unsloth.training.arguments.FinetuneSFTConfig`),
            passed to the trainer as it is, except ``gradient_checkpointing``, set here for the backend.
        backend: ``unsloth`` or ``transformers``.
        use_gradient_checkpointing: As given to :func:`add_lora`; on the transformers backend the
            trainer turns checkpointing on unless it is ``false`` (Unsloth sets up its own).
        callbacks: Extra ``TrainerCallback`` objects.
    """
    from transformers.trainer_callback import ProgressCallback
    from trl import SFTTrainer

    training_args.gradient_checkpointing = (
        backend == "transformers" and str(use_gradient_checkpointing).lower() != "false"
    )
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=dataset, args=training_args)
    trainer.remove_callback(ProgressCallback)
    for callback in [*_callbacks(), *(callbacks or [])]:
        trainer.add_callback(callback)
    return trainer


# ---------------------------------------------------------------------------------------------- summary
@dataclass
class TrainingSummary:
    """What a run did, read from the trainer's ``state`` (it survives an interrupted run).

    Attributes:
        steps: One entry per logged step: ``step``, ``loss``, ``learning_rate``, ``grad_norm``, ``epoch``,
            ``step_seconds`` (from ``state.log_history``).
        global_step: Optimizer steps done.
        max_steps: Optimizer steps planned.
        train_loss: The trainer's mean training loss (only when training finished).
        seconds: Wall time of ``trainer.train()``.
    """

    steps: List[Dict[str, Any]] = field(default_factory=list)
    global_step: int = 0
    max_steps: int = 0
    train_loss: Optional[float] = None
    seconds: float = 0.0

    @classmethod
    def from_state(cls, state: Any, seconds: float) -> TrainingSummary:
        """Reads a ``transformers.TrainerState`` (``trainer.state``)."""
        steps, train_loss = [], None
        for entry in state.log_history:
            if "loss" in entry:
                row = {"step": int(entry.get("step", 0)), "loss": float(entry["loss"])}
                for key in ("learning_rate", "grad_norm", "epoch", "step_seconds"):
                    if entry.get(key) is not None:
                        row[key] = float(entry[key])
                steps.append(row)
            elif "train_loss" in entry:
                train_loss = float(entry["train_loss"])
        return cls(
            steps=steps,
            global_step=int(state.global_step),
            max_steps=int(state.max_steps),
            train_loss=train_loss,
            seconds=seconds,
        )

    @property
    def final_loss(self) -> Optional[float]:
        """The last logged loss."""
        return self.steps[-1]["loss"] if self.steps else None

    def _step_seconds(self) -> List[Tuple[int, float]]:
        return [(s["step"], s["step_seconds"]) for s in self.steps if "step_seconds" in s]

    def mean_step_seconds(self) -> Optional[float]:
        """Mean wall time of the logged steps."""
        values = [v for _, v in self._step_seconds()]
        return sum(values) / len(values) if values else None

    def median_step_seconds(self, skip: int = 3) -> Optional[float]:
        """Median step time after the first ``skip`` steps (compilation and warm-up)."""
        timed = self._step_seconds()
        values = [v for step, v in timed if step > skip] or [v for _, v in timed]
        return statistics.median(values) if values else None


__all__ = [
    "FUSED_MODULES",
    "TARGET_MODULES",
    "GRADIENT_CHECKPOINTING",
    "PRECISIONS",
    "TrainingSummary",
    "add_lora",
    "build_trainer",
    "linear_module_names",
    "map_target_modules",
    "resolve_optimizer",
    "resolve_precision",
]
