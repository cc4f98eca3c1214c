"""Reusable pieces of LoRA fine-tuning: data checks, LoRA per backend, the trainer, saving and reporting.

The ``finetune`` recipe strings these together; they are usable on their own::

    records = read_records("data.json")
    check_records(records, fmt, "data.json")                  # before any model loads
    model, tokenizer, backend = load_model(name, for_training=True)
    model = add_lora(model, backend, LoraSettings())
    dataset = to_text_dataset("data.json", fmt, tokenizer)
    history = TrainingHistory()
    trainer = build_trainer(model, tokenizer, dataset, TrainSettings(), "out", backend, history)
    trainer.train()
    save_adapter(model, tokenizer, fmt, "out")

Nothing here imports torch, transformers, peft or trl at module import: on a GPU machine unsloth must
be imported before them, which happens when the model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from llama_unsloth.prompts import PromptFormat, PromptFormatError
from llama_unsloth.errors import DatasetError, HubTokenError  # noqa: F401 (defined there, re-exported here)

logger = logging.getLogger(__name__)

TRAIN_LOG_FILE = "train_log.json"
LOSS_PLOT_FILE = "loss.png"
MODEL_CARD_FILE = "README.md"
MERGED_FOLDER = "merged"
SAVE_METHODS = ("lora", "merged_16bit", "merged_4bit")
TOKEN_ENV = "HF_TOKEN"
DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ---------------------------------------------------------------------------------------------- settings
@dataclass
class LoraSettings:
    """LoRA adapter settings (the defaults are those of Unsloth's notebooks).

    Args:
        r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: Dropout on the LoRA input (0 lets Unsloth use its fast path).
        bias: ``none``, ``all`` or ``lora_only``.
        target_modules: Linear layers that get adapters.
        use_gradient_checkpointing: ``unsloth`` (Unsloth's offloaded checkpointing; plain checkpointing
            on the transformers backend), ``true`` or ``false``.
        random_state: Seed of the adapter initialisation.
        max_seq_length: Longest training sequence (Unsloth sizes buffers with it).
    """

    r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    bias: str = "none"
    target_modules: List[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))
    use_gradient_checkpointing: str = "unsloth"
    random_state: int = 3407
    max_seq_length: int = 2048


@dataclass
class TrainSettings:
    """Trainer settings (defaults as in Unsloth's notebooks).

    Args:
        per_device_train_batch_size: Sequences per device per forward pass.
        gradient_accumulation_steps: Forward passes per optimizer step.
        warmup_steps: Linear warm-up steps of the learning rate.
        max_steps: Optimizer steps; ``-1`` trains ``num_train_epochs`` epochs instead.
        num_train_epochs: Epochs when ``max_steps`` is ``-1``.
        learning_rate: Peak learning rate.
        optim: Optimizer name as in ``transformers.TrainingArguments`` (``adamw_8bit`` falls back to
            ``adamw_torch`` where bitsandbytes cannot run).
        weight_decay: AdamW weight decay.
        lr_scheduler_type: Learning-rate schedule.
        seed: Seed of data order and dropout.
        max_seq_length: Longer training texts are truncated to this many tokens.
        precision: ``auto`` (bf16 where supported else fp16 on GPU, fp32 on CPU), ``bf16``, ``fp16`` or ``fp32``.
        logging_steps: Optimizer steps between loss records.
        packing: Pack several short texts into one sequence.
        completion_only_loss: Train only on the answer (the tokens after the prompt), like Unsloth's
            ``train_on_responses_only``; off by default, as in our users' notebooks (the whole text).
    """

    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 4
    warmup_steps: int = 5
    max_steps: int = 100
    num_train_epochs: float = 1.0
    learning_rate: float = 2e-4
    optim: str = "adamw_8bit"
    weight_decay: float = 0.01
    lr_scheduler_type: str = "linear"
    seed: int = 3407
    max_seq_length: int = 2048
    precision: str = "auto"
    logging_steps: int = 1
    packing: bool = False
    completion_only_loss: bool = False


# ---------------------------------------------------------------------------------------------- data
def read_records(path: "str | Path") -> List[Any]:
    """Reads a JSON array or a JSON Lines file into a list of records, with clear errors.

    Args:
        path: The data file.

    Raises:
        DatasetError: The file is missing, empty, not JSON / JSON Lines, or holds no records.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"Data file {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path} is not a UTF-8 text file (JSON or JSON Lines expected): {err}.") from None
    if not text.strip():
        raise DatasetError(f"{path} is empty: it holds no training records.")
    stripped = text.lstrip()
    records: List[Any]
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(
                f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}."
            ) from None
        records = list(data)
    else:
        records = []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DatasetError(
                    f"{path} is neither a JSON array nor JSON Lines: line {line_number} is not JSON "
                    f"({err.msg}, column {err.colno})."
                ) from None
        if len(records) == 1 and isinstance(records[0], Mapping) and not _looks_like_record(records[0]):
            raise DatasetError(
                f"{path} holds one JSON object, not a list of records: write a JSON array [{{...}}, ...] "
                "or one record per line (JSON Lines)."
            )
    if not records:
        raise DatasetError(f"{path} holds no training records.")
    return records


def _looks_like_record(obj: Mapping[str, Any]) -> bool:
    # A lone object whose values are all lists/dicts is a wrapper ({"data": [...]}), not a record.
    return any(not isinstance(v, (list, dict)) for v in obj.values())


def check_records(records: Sequence[Any], prompt_format: PromptFormat, source: str) -> None:
    """Checks every record has the format's fields as strings; for template formats, renders the first.

    Raises:
        PromptFormatError: Naming the file, the 1-based record number and the field.
    """
    for number, record in enumerate(records, start=1):
        prompt_format.check_record(record, number, source)
    if not prompt_format.is_chat:
        try:
            prompt_format.render_training(records[0], eos_token="")
        except PromptFormatError as err:
            raise PromptFormatError(f"{source}, record 1: {err}") from None


def file_sha256(path: "str | Path") -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def render_text(record: Mapping[str, Any], prompt_format: PromptFormat, tokenizer: Any) -> str:
    """One training text: the layout filled with the record, ending with the tokenizer's EOS (never twice)."""
    return prompt_format.render_training(record, eos_token=tokenizer.eos_token or "", tokenizer=tokenizer)


def tokenize_record(
    record: Mapping[str, Any], prompt_format: PromptFormat, tokenizer: Any, max_length: Optional[int] = None
) -> Dict[str, List[int]]:
    """Token ids the trainer sees for one record.

    The prompt part is tokenized by :func:`~llama_unsloth.prompts.encode_prompt`, the function
    ``UnslothLLM`` uses for ``generate``, and the answer part after it without special tokens: the ids up
    to where the answer starts are the ids inference feeds the model, with one BOS, and EOS is appended
    only as the layout says (TRL would otherwise add a BOS to text that already has one, and an EOS to a
    layout that writes its own end marker).

    Returns:
        ``input_ids`` and ``completion_mask`` (1 from where the answer starts).
    """
    from llama_unsloth.prompts import encode_prompt, encode_training

    prompt, completion = prompt_format.split_training(record, eos_token=tokenizer.eos_token or "", tokenizer=tokenizer)
    ids = encode_training(tokenizer, prompt, completion)
    n_prompt = len(encode_prompt(tokenizer, prompt)) if prompt else 0
    if max_length is not None:
        ids = ids[:max_length]
    return {"input_ids": ids, "completion_mask": [0] * min(n_prompt, len(ids)) + [1] * max(0, len(ids) - n_prompt)}


def to_text_dataset(
    path: "str | Path", prompt_format: PromptFormat, tokenizer: Any, max_length: Optional[int] = None
) -> Any:
    """Loads the data file with ``datasets`` and maps every record to its training token ids.

    The dataset holds ``input_ids`` (see :func:`tokenize_record`) and ``completion_mask``; TRL's
    ``SFTTrainer`` takes it as already tokenized and trains on the whole text, as our users' notebooks do.

    Raises:
        DatasetError: ``datasets`` cannot read the file (e.g. a field changes type between records).
    """
    import datasets

    datasets.disable_progress_bars()
    try:
        dataset = datasets.load_dataset("json", data_files=str(path), split="train")
    except Exception as err:  # pyarrow schema errors, mostly
        raise DatasetError(f"datasets could not read {path}: {type(err).__name__}: {err}") from err
    return dataset.map(
        lambda record: tokenize_record(record, prompt_format, tokenizer, max_length),
        remove_columns=dataset.column_names,
        load_from_cache_file=False,
    )


# ---------------------------------------------------------------------------------------------- model
def add_lora(model: Any, backend: str, settings: LoraSettings) -> Any:
    """Wraps a loaded model with LoRA adapters, the way its backend does it.

    Args:
        model: Model from :func:`llama_unsloth.loading.load_model` (``for_training=True``).
        backend: ``unsloth`` (``FastLanguageModel.get_peft_model``) or ``transformers`` (``peft.get_peft_model``).
        settings: LoRA settings.

    Returns:
        The PEFT model with only the adapter weights trainable.
    """
    checkpointing = str(settings.use_gradient_checkpointing).lower()
    if checkpointing not in ("unsloth", "true", "false"):
        raise ValueError(f"use_gradient_checkpointing must be unsloth, true or false, got {checkpointing!r}.")
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        return FastLanguageModel.get_peft_model(
            model,
            r=settings.r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            bias=settings.bias,
            target_modules=list(settings.target_modules),
            use_gradient_checkpointing={"unsloth": "unsloth", "true": True, "false": False}[checkpointing],
            random_state=settings.random_state,
            max_seq_length=settings.max_seq_length,
        )
    import torch
    from peft import LoraConfig, get_peft_model

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing != "false")
    torch.manual_seed(settings.random_state)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        bias=settings.bias,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


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
        ValueError: Unknown name, or bf16/fp16 asked for without a GPU.
    """
    from llama_unsloth.import_utils import cuda_available

    if precision not in ("auto", "bf16", "fp16", "fp32"):
        raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {precision!r}.")
    on_gpu = cuda_available()
    if precision == "auto":
        if not on_gpu:
            return "fp32"
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision in ("bf16", "fp16") and not on_gpu:
        logger.warning("precision %s needs a GPU for mixed-precision training; training in fp32.", precision)
        return "fp32"
    return precision


# ---------------------------------------------------------------------------------------------- trainer
@dataclass
class TrainingHistory:
    """What happened during training: one entry per logged step, plus step timings.

    Filled by the callback :func:`build_trainer` installs; it survives an interrupted run.
    """

    steps: List[Dict[str, Any]] = field(default_factory=list)
    max_steps: int = 0
    global_step: int = 0
    started: float = field(default_factory=time.time)
    finished: Optional[float] = None
    train_loss: Optional[float] = None
    _step_began: Optional[float] = None
    _step_seconds: Dict[int, float] = field(default_factory=dict)

    def step_began(self) -> None:
        self._step_began = time.perf_counter()

    def step_ended(self, step: int) -> None:
        self.global_step = step
        if self._step_began is not None:
            self._step_seconds[step] = time.perf_counter() - self._step_began

    def logged(self, step: int, logs: Mapping[str, Any]) -> None:
        if "loss" not in logs:
            if "train_loss" in logs:
                self.train_loss = float(logs["train_loss"])
            return
        entry: Dict[str, Any] = {"step": step, "loss": float(logs["loss"])}
        for key in ("learning_rate", "grad_norm", "epoch"):
            if key in logs and logs[key] is not None:
                entry[key] = float(logs[key])
        if step in self._step_seconds:
            entry["step_seconds"] = round(self._step_seconds[step], 4)
        self.steps.append(entry)

    @property
    def final_loss(self) -> Optional[float]:
        """The last logged loss."""
        return self.steps[-1]["loss"] if self.steps else None

    @property
    def seconds(self) -> float:
        return (self.finished or time.time()) - self.started

    def mean_step_seconds(self) -> Optional[float]:
        values = list(self._step_seconds.values())
        return sum(values) / len(values) if values else None

    def median_step_seconds(self, skip: int = 3) -> Optional[float]:
        """Median step time after the first ``skip`` steps (compilation and warm-up)."""
        values = [v for step, v in sorted(self._step_seconds.items()) if step > skip] or list(self._step_seconds.values())
        return statistics.median(values) if values else None


def _callbacks(history: TrainingHistory) -> List[Any]:
    from transformers import TrainerCallback
    from transformers.trainer_callback import ProgressCallback

    class HistoryCallback(TrainerCallback):
        """Feeds :class:`TrainingHistory`."""

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            history.max_steps = state.max_steps
            history.started = time.time()

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            history.step_began()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            history.step_ended(state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
            history.logged(state.global_step, logs or {})

    class QuietProgressCallback(ProgressCallback):
        """The Trainer's progress bar (with ETA), showing the loss on the bar instead of printing log dicts."""

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
            if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    return [HistoryCallback(), QuietProgressCallback()]


def build_trainer(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    settings: TrainSettings,
    output_dir: "str | Path",
    backend: str,
    history: TrainingHistory,
    callbacks: Optional[Sequence[Any]] = None,
    use_gradient_checkpointing: str = "unsloth",
) -> Any:
    """Builds TRL's ``SFTTrainer`` over the ``text`` column, with a progress bar and a loss history.

    Args:
        model: The PEFT model from :func:`add_lora`.
        tokenizer: Its tokenizer.
        dataset: Dataset with a ``text`` column.
        settings: Trainer settings.
        output_dir: Run folder (the trainer writes no checkpoints there).
        backend: ``unsloth`` or ``transformers``.
        history: Filled while training.
        callbacks: Extra ``TrainerCallback`` objects.
        use_gradient_checkpointing: As given to :func:`add_lora`; on the transformers backend the
            trainer turns checkpointing on unless it is ``false`` (Unsloth sets up its own).
    """
    from transformers.trainer_callback import ProgressCallback
    from trl import SFTConfig, SFTTrainer

    from llama_unsloth.import_utils import cuda_available

    optim, note = resolve_optimizer(settings.optim)
    if note:
        logger.info("Note: %s", note)
    precision = resolve_precision(settings.precision)
    checkpointing = backend == "transformers" and str(use_gradient_checkpointing).lower() != "false"
    args = SFTConfig(
        output_dir=str(output_dir),
        dataset_text_field="text",
        max_length=settings.max_seq_length,
        packing=settings.packing,
        completion_only_loss=settings.completion_only_loss,
        per_device_train_batch_size=settings.per_device_train_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        warmup_steps=settings.warmup_steps,
        max_steps=settings.max_steps,
        num_train_epochs=settings.num_train_epochs,
        learning_rate=settings.learning_rate,
        optim=optim,
        weight_decay=settings.weight_decay,
        lr_scheduler_type=settings.lr_scheduler_type,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        logging_steps=settings.logging_steps,
        save_strategy="no",
        report_to="none",
        gradient_checkpointing=checkpointing,
        dataset_num_proc=1,
        dataloader_pin_memory=cuda_available(),
        push_to_hub=False,
    )
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=dataset, args=args)
    trainer.remove_callback(ProgressCallback)
    for callback in [*_callbacks(history), *(callbacks or [])]:
        trainer.add_callback(callback)
    return trainer


# ---------------------------------------------------------------------------------------------- saving
def save_adapter(model: Any, tokenizer: Any, prompt_format: PromptFormat, folder: "str | Path") -> Path:
    """Saves the LoRA adapter, the tokenizer and ``prompt_format.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    prompt_format.save(folder)
    return folder


def save_merged(
    model: Any, tokenizer: Any, prompt_format: PromptFormat, folder: "str | Path", method: str, backend: str
) -> Path:
    """Merges the adapter into the base weights and saves a full model folder (+ ``prompt_format.json``).

    Call after :func:`save_adapter`: on the transformers backend the merge happens in place, so
    ``model`` holds no separate adapter afterwards.

    Args:
        model: The trained PEFT model.
        tokenizer: Its tokenizer.
        prompt_format: Layout saved with the model.
        folder: Target folder.
        method: ``merged_16bit`` or ``merged_4bit`` (Unsloth's ``merged_4bit_forced``; 16-bit with a
            warning where bitsandbytes cannot run).
        backend: ``unsloth`` or ``transformers``.
    """
    if method not in ("merged_16bit", "merged_4bit"):
        raise ValueError(f"save method must be merged_16bit or merged_4bit, got {method!r}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if backend == "unsloth":
        save_method = "merged_4bit_forced" if method == "merged_4bit" else "merged_16bit"
        model.save_pretrained_merged(str(folder), tokenizer, save_method=save_method)
    else:
        _save_merged_transformers(model, tokenizer, folder, method)
    prompt_format.save(folder)
    return folder


def _save_merged_transformers(model: Any, tokenizer: Any, folder: Path, method: str) -> None:
    import torch

    from llama_unsloth.import_utils import cuda_available, is_bitsandbytes_available

    merged = model.merge_and_unload()
    quantized = getattr(merged, "is_loaded_in_4bit", False) or getattr(merged, "is_loaded_in_8bit", False)
    if method == "merged_4bit" and quantized:
        merged.save_pretrained(str(folder))  # bitsandbytes 4-bit serialization
        tokenizer.save_pretrained(str(folder))
        return
    if quantized:
        merged = merged.dequantize()
    on_gpu = cuda_available()
    dtype16 = torch.float16 if on_gpu and not torch.cuda.is_bf16_supported() else torch.bfloat16
    merged = merged.to(dtype16)
    if method == "merged_4bit" and not is_bitsandbytes_available():
        warnings.warn(
            "merged_4bit needs a CUDA GPU and bitsandbytes; saving the merged model in 16-bit instead.", stacklevel=3
        )
        method = "merged_16bit"
    if method == "merged_16bit":
        merged.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        return
    # 4-bit on GPU from a full-precision base: write 16-bit, reload quantized, write 4-bit.
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    staging = Path(tempfile.mkdtemp(prefix="merged16.", dir=folder.parent))
    try:
        merged.save_pretrained(str(staging))
        quantized_model = AutoModelForCausalLM.from_pretrained(
            str(staging),
            quantization_config=BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype16
            ),
            device_map="auto",
        )
        quantized_model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- reporting
def write_train_log(path: "str | Path", history: TrainingHistory, settings: Mapping[str, Any], **extra: Any) -> Path:
    """Writes ``train_log.json``: per-step loss, learning rate, epoch and step time, the final loss and settings."""
    path = Path(path)
    data = {
        "final_loss": history.final_loss,
        "train_loss": history.train_loss,
        "global_step": history.global_step,
        "max_steps": history.max_steps,
        "seconds": round(history.seconds, 2),
        "mean_step_seconds": history.mean_step_seconds(),
        "median_step_seconds": history.median_step_seconds(),
        "peak_gpu_memory_gib": peak_gpu_memory_gib(),
        **extra,
        "settings": dict(settings),
        "steps": history.steps,
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def plot_loss(path: "str | Path", history: TrainingHistory, title: str = "Training loss") -> Optional[Path]:
    """Draws loss against step into a PNG (matplotlib's Agg canvas; no display needed).

    Returns:
        The path, or ``None`` when no step was logged.
    """
    points = [(s["step"], s["loss"]) for s in history.steps if math.isfinite(s["loss"])]
    if not points:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    steps, losses = zip(*points)
    axes.plot(steps, losses, marker="o" if len(points) < 30 else None, linewidth=1.5)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(str(path), format="png")
    return Path(path)


def model_card(
    *,
    base_model: str,
    data_file: str,
    data_sha256: str,
    records: int,
    prompt_format: PromptFormat,
    backend: str,
    settings: Mapping[str, Any],
    history: TrainingHistory,
    interrupted: bool = False,
) -> str:
    """The ``README.md`` model card text for a fine-tuned adapter or merged model."""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    final = f"{history.final_loss:.4f}" if history.final_loss is not None else "n/a"
    status = (
        f"**Interrupted** (Ctrl-C) after {history.global_step} of {history.max_steps} steps."
        if interrupted
        else f"Completed {history.global_step} steps."
    )
    rows = "\n".join(f"| {key} | `{value}` |" for key, value in settings.items())
    return f"""---
library_name: peft
base_model: {json.dumps(str(base_model))}
tags:
- llama-unsloth
- lora
- sft
---

# LoRA fine-tune of {Path(base_model).name or base_model}

Trained with `llama-unsloth finetune` on {date}. {status}

| | |
| --- | --- |
| Base model | `{base_model}` |
| Backend | {backend} |
| Data file | `{data_file}` |
| Data SHA-256 | `{data_sha256}` |
| Records | {records} |
| Prompt format | `{prompt_format.name}` |
| Final loss | {final} |
| Training time | {history.seconds:.1f} s |

## Use

```python
from llama_unsloth import UnslothLLM

llm = UnslothLLM.from_finetuned("path/to/this/folder")  # prompted in the `{prompt_format.name}` layout it was trained on
print(llm.complete("Your question"))
```

`prompt_format.json` holds the prompt layout; `train_log.json` the per-step loss; `loss.png` its plot.
{_serving_section(settings)}
## Settings

| setting | value |
| --- | --- |
{rows}
"""


def _serving_section(settings: Mapping[str, Any]) -> str:
    """How to serve the merged model with vLLM and prompt it in its layout from LlamaIndex (ServedLLM)."""
    save = settings.get("save", "lora")
    if save not in ("merged_16bit", "merged_4bit"):
        return (
            "\n## Serve it\n\nvLLM serves a merged model: run the recipe again with `--save merged_16bit` (or `merged_4bit`); "
            "its model card then gives the exact `vllm serve` command.\n"
        )
    folder = f"{settings.get('output_dir', '.')}/{MERGED_FOLDER}"
    name = Path(str(settings.get("output_dir", "model"))).name or "model"
    # vLLM reads bitsandbytes-quantized checkpoints only when told to.
    quant = " --quantization bitsandbytes" if save == "merged_4bit" else ""
    return f"""
## Serve it

```bash
vllm serve {folder}{quant} --served-model-name {name} --port 8001
```

```python
from llama_unsloth.served_llm import ServedLLM

llm = ServedLLM.from_finetuned("{folder}", api_base="http://127.0.0.1:8001/v1", model="{name}")  # same prompts as UnslothLLM
```
"""


def peak_gpu_memory_gib() -> Optional[float]:
    """Peak GPU memory allocated by torch in this process (GiB), or ``None`` without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def environment_summary() -> Dict[str, str]:
    """Library versions and the device, for the train log."""
    import importlib.metadata as metadata

    info = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "trl", "datasets", "unsloth"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        import torch

        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # pragma: no cover - informational only
        pass
    return info


# ---------------------------------------------------------------------------------------------- hub
def hub_token_from_env() -> str:
    """The Hub token from ``HF_TOKEN`` (the only place it is read from).

    Raises:
        HubTokenError: ``HF_TOKEN`` is unset or empty.
    """
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise HubTokenError(
            f"--push-to-hub needs a Hugging Face token with write access in the {TOKEN_ENV} environment variable "
            f"(export {TOKEN_ENV}=...); it is read from there only and never written anywhere."
        )
    return token


def push_folder_to_hub(folder: "str | Path", repo_id: str, token: str, private: bool = True) -> str:
    """Uploads a model folder to a Hub repository (created if missing).

    Errors never carry the token: it is masked in any message passed on.

    Returns:
        The repository URL.
    """
    from huggingface_hub import HfApi

    try:
        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            ignore_patterns=[f"{MERGED_FOLDER}/*", "checkpoint-*", "*.pt", "*.bin.tmp"],
            commit_message="Upload model fine-tuned with llama-unsloth",
        )
    except Exception as err:
        message = str(err).replace(token, "***")
        raise RuntimeError(f"Pushing {folder} to the Hub repository {repo_id} failed: {type(err).__name__}: {message}") from None
    return str(url)


__all__ = [
    "DatasetError",
    "HubTokenError",
    "LoraSettings",
    "TrainSettings",
    "TrainingHistory",
    "read_records",
    "check_records",
    "file_sha256",
    "render_text",
    "tokenize_record",
    "to_text_dataset",
    "add_lora",
    "resolve_optimizer",
    "resolve_precision",
    "build_trainer",
    "save_adapter",
    "save_merged",
    "write_train_log",
    "plot_loss",
    "model_card",
    "environment_summary",
    "hub_token_from_env",
    "push_folder_to_hub",
]
