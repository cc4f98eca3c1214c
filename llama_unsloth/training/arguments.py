"""The settings of a fine-tuning run, each defined once: TRL's own config classes with our users' defaults.

* :class:`FinetuneScriptArguments`: what to train on and what to save (TRL's ``ScriptArguments`` role).
* :class:`LoraModelConfig`: TRL's ``ModelConfig`` (base model, LoRA, 4-bit), plus Unsloth's
  ``get_peft_model`` settings; TRL's ``get_peft_config`` turns it into PEFT's ``LoraConfig``.
* :class:`FinetuneSFTConfig`: TRL's ``SFTConfig``, handed to ``SFTTrainer`` as it is.
* :func:`settings_record`: a run's settings as ``train_log.json`` and the model card show them, read
  from these classes' own fields (each option they declare, under its flag name), never copied by hand.

The defaults are the ones in our users' Unsloth notebooks (``FastLanguageModel.from_pretrained(...,
max_seq_length=2048, load_in_4bit=True)``, ``get_peft_model(r=16, lora_alpha=16, lora_dropout=0, ...,
use_gradient_checkpointing="unsloth", random_state=3407)``, ``SFTTrainer`` with batch 2 x accumulation 4,
warm-up 5, 100 steps, lr 2e-4, ``adamw_8bit``, weight decay 0.01, linear schedule, seed 3407, bf16 where
supported else fp16). Fields of TRL's classes this recipe does not honour are not options (``init=False``).
Every value is checked in ``__post_init__``; a bad one raises :class:`~llama_unsloth.errors.OptionError`
naming the flag, the allowed range and the value.

This module imports trl (and so transformers): in a process that trains with Unsloth, import unsloth
first (:func:`llama_unsloth.import_utils.is_unsloth_available` does).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional

from trl import ModelConfig, SFTConfig

from llama_unsloth.models import BACKENDS, DTYPE_NAMES
from llama_unsloth.training import SAVE_METHODS
from llama_unsloth.training.trainer import (
    GRADIENT_CHECKPOINTING,
    PRECISIONS,
    TARGET_MODULES,
    resolve_optimizer,
    resolve_precision,
)
from llama_unsloth.validation import check_choice, check_range

SaveMethod = Literal["lora", "merged_16bit", "merged_4bit"]

DTYPES = ("auto", *DTYPE_NAMES)


# TRL's SFTConfig fields, read when this module is imported (after unsloth, which patches the class, on a GPU).
_SFT_FIELDS = {f.name for f in dataclasses.fields(SFTConfig)}


def _parent_field(parent: type, name: str) -> Any:
    return {f.name: f for f in dataclasses.fields(parent)}[name]  # type: ignore[arg-type]


def _spec(
    parent: type,
    name: str,
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    help: Optional[str] = None,
    aliases: Optional[List[str]] = None,
) -> Any:  # noqa: A002
    """A field of ``parent`` with our default (and help/aliases), keeping TRL's help text otherwise."""
    metadata = dict(_parent_field(parent, name).metadata)
    if help is not None:
        metadata["help"] = help
    if aliases:
        metadata["aliases"] = aliases
    return field(default=default, default_factory=default_factory, metadata=metadata)


def _hidden(parent: type, name: str, default: Any) -> Any:
    """A field of ``parent`` that is not an option here (the recipe sets or ignores it)."""
    return field(default=default, init=False, metadata=dict(_parent_field(parent, name).metadata))


@dataclass
class FinetuneScriptArguments:
    """What to train on and what to keep (the role of TRL's ``ScriptArguments``)."""

    data: str = field(metadata={"help": "Training data: a JSON array of records or a JSON Lines file (required)."})
    prompt_format: str = field(
        default="alpaca",
        metadata={
            "help": "Prompt layout: alpaca, alpaca-context, instruction-context, reasoning, chat, or a template "
            "file (.j2 Jinja2, or a Python format string with --prompt-fields)."
        },
    )
    prompt_fields: Optional[List[str]] = field(
        default=None,
        metadata={
            "help": "Roles of a Python format template's positional {} placeholders, in order, e.g. "
            "--prompt-fields instruction input output (see examples/templates/)."
        },
    )
    save: SaveMethod = field(
        default="lora",
        metadata={
            "help": "lora (adapter only), merged_16bit or merged_4bit (a full model in <output-dir>/merged too)."
        },
    )
    push_to_hub: Optional[str] = field(
        default=None,
        metadata={"help": "Hub repository (user/name) to upload the result to; the token comes from $HF_TOKEN only."},
    )
    hub_private: bool = field(default=True, metadata={"help": "Create the Hub repository as private."})
    gpu_memory_gib: Optional[float] = field(
        default=None,
        metadata={
            "help": "Plan for a GPU with this much memory (e.g. 22 for an L4): the run stops before loading if its "
            "memory estimate does not fit. Default: the free memory of the GPU here."
        },
    )
    memory_check: bool = field(
        default=True,
        metadata={"help": "Stop before loading when the memory estimate exceeds the GPU (--no-memory-check: go on)."},
    )

    def __post_init__(self) -> None:
        check_choice("save", self.save, SAVE_METHODS)
        if self.gpu_memory_gib is not None:
            check_range("--gpu-memory-gib", self.gpu_memory_gib, gt=0)
        if self.push_to_hub is not None and self.push_to_hub.count("/") != 1:
            from llama_unsloth.errors import OptionError

            raise OptionError(f"--push-to-hub must be a Hub repository id user/name; got {self.push_to_hub!r}.")


@dataclass
class LoraModelConfig(ModelConfig):
    """TRL's ``ModelConfig`` with our users' defaults, and the Unsloth settings it lacks."""

    model_name_or_path: Optional[str] = _spec(
        ModelConfig,
        "model_name_or_path",
        None,
        aliases=["--model"],
        help="Hub id or local folder of the base model. Default: $LLAMA_UNSLOTH_MODEL or the offline SmolLM2-135M-Instruct.",
    )
    dtype: Optional[str] = _spec(
        ModelConfig,
        "dtype",
        None,
        help="Model dtype: auto, float32, bfloat16 or float16; unset: bf16/fp16 on GPU, fp32 on CPU.",
    )
    lora_r: int = _spec(ModelConfig, "lora_r", 16, aliases=["--r"], help="LoRA rank.")
    lora_alpha: int = _spec(ModelConfig, "lora_alpha", 16, help="LoRA alpha (scaling numerator).")
    lora_dropout: float = _spec(
        ModelConfig, "lora_dropout", 0.0, help="LoRA dropout (0 lets Unsloth use its fast path)."
    )
    lora_target_modules: Optional[List[str]] = _spec(
        ModelConfig,
        "lora_target_modules",
        default_factory=lambda: list(TARGET_MODULES),
        aliases=["--target-modules"],
        help="Linear layers that get LoRA adapters.",
    )
    load_in_4bit: bool = _spec(
        ModelConfig, "load_in_4bit", True, help="Load the base model in bitsandbytes 4-bit (full precision on CPU)."
    )
    backend: Literal["auto", "unsloth", "transformers"] = field(
        default="auto", metadata={"help": "auto (Unsloth when CUDA is available), unsloth or transformers."}
    )
    use_gradient_checkpointing: Literal["unsloth", "true", "false"] = field(
        default="unsloth",
        metadata={
            "help": "unsloth (Unsloth's offloaded checkpointing; plain checkpointing on transformers), true or false."
        },
    )
    random_state: int = field(
        default=3407, metadata={"help": "Seed of the LoRA initialisation (Unsloth's random_state)."}
    )
    # TRL's own default and help; declared here so that the run's settings record lists it (settings_record).
    use_rslora: bool = _spec(ModelConfig, "use_rslora", False)
    # TRL options this recipe does not offer: LoRA is always on, 4-bit is NF4 with double quantization.
    use_peft: bool = _hidden(ModelConfig, "use_peft", True)
    model_revision: str = _hidden(ModelConfig, "model_revision", "main")
    attn_implementation: Optional[str] = _hidden(ModelConfig, "attn_implementation", None)
    lora_target_parameters: Optional[List[str]] = _hidden(ModelConfig, "lora_target_parameters", None)
    lora_modules_to_save: Optional[List[str]] = _hidden(ModelConfig, "lora_modules_to_save", None)
    lora_task_type: str = _hidden(ModelConfig, "lora_task_type", "CAUSAL_LM")
    use_dora: bool = _hidden(ModelConfig, "use_dora", False)
    load_in_8bit: bool = _hidden(ModelConfig, "load_in_8bit", False)
    bnb_4bit_quant_type: str = _hidden(ModelConfig, "bnb_4bit_quant_type", "nf4")
    use_bnb_nested_quant: bool = _hidden(ModelConfig, "use_bnb_nested_quant", True)
    bnb_4bit_quant_storage: Optional[str] = _hidden(ModelConfig, "bnb_4bit_quant_storage", None)

    def __post_init__(self) -> None:
        check_range("--r", self.lora_r, min=1)
        check_range("lora_alpha", self.lora_alpha, min=1)
        check_range("lora_dropout", self.lora_dropout, min=0, lt=1)
        check_range("random_state", self.random_state, min=0)
        check_choice("backend", self.backend, BACKENDS)
        check_choice(
            "use_gradient_checkpointing", str(self.use_gradient_checkpointing).lower(), GRADIENT_CHECKPOINTING
        )
        self.use_gradient_checkpointing = str(self.use_gradient_checkpointing).lower()  # type: ignore[assignment]
        check_choice("dtype", self.dtype, DTYPES)
        if not self.lora_target_modules:
            from llama_unsloth.errors import OptionError

            raise OptionError("--target-modules needs at least one layer name, e.g. q_proj v_proj.")
        super().__post_init__()
        # TRL turns a one-item list into a str, which PEFT reads as a regex over full module names (so
        # "q_proj" matches nothing); keep names as a list, except PEFT's keyword "all-linear".
        if isinstance(self.lora_target_modules, str) and self.lora_target_modules != "all-linear":
            self.lora_target_modules = [self.lora_target_modules]


@dataclass
class FinetuneSFTConfig(SFTConfig):
    """TRL's ``SFTConfig`` with our users' defaults; passed to ``SFTTrainer`` unchanged.

    ``precision`` (auto, bf16, fp16, fp32) sets TRL's ``bf16``/``fp16``; ``adamw_8bit`` becomes
    ``adamw_torch`` without CUDA. After ``__post_init__`` the fields hold what the run really uses.
    """

    output_dir: Optional[str] = _spec(
        SFTConfig, "output_dir", "outputs/finetune", help="Folder for the adapter, logs, loss plot and model card."
    )
    # transformers 5 dropped TrainingArguments.overwrite_output_dir and TRL's SFTConfig has none: ours, read by
    # llama_unsloth.training.outputs before any model loads (SFTTrainer ignores the extra field).
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace an earlier run in --output_dir: its adapter, merged/, checkpoints, train_log.json, "
            "loss.png, README.md and tokenizer files are removed before the new run writes. Without it a folder "
            "that holds files is refused. A folder holding anything a fine-tune never writes (your data, notes) "
            "is refused even with it, and nothing is deleted."
        },
    )
    resume_from_checkpoint: Optional[str] = _spec(
        SFTConfig,
        "resume_from_checkpoint",
        None,
        help="Continue a run from a checkpoint-<step> folder it saved (--save-strategy steps), or 'last' for the "
        "newest in --output_dir; resuming inside --output_dir keeps its checkpoints and needs no "
        "--overwrite_output_dir.",
    )
    max_length: Optional[int] = _spec(
        SFTConfig,
        "max_length",
        2048,
        aliases=["--max-seq-length", "--max_seq_length"],
        help="Longest training sequence in tokens (longer texts are truncated); also the model's max_seq_length.",
    )
    per_device_train_batch_size: int = _spec(
        SFTConfig, "per_device_train_batch_size", 2, help="Sequences per forward pass."
    )
    gradient_accumulation_steps: int = _spec(
        SFTConfig, "gradient_accumulation_steps", 4, help="Forward passes per optimizer step."
    )
    warmup_steps: float = _spec(SFTConfig, "warmup_steps", 5, help="Learning-rate warm-up steps.")
    max_steps: int = _spec(SFTConfig, "max_steps", 100, help="Optimizer steps; -1 trains --num-train-epochs epochs.")
    num_train_epochs: float = _spec(SFTConfig, "num_train_epochs", 1.0, help="Epochs when --max-steps is -1.")
    learning_rate: float = _spec(SFTConfig, "learning_rate", 2e-4, help="Peak learning rate.")
    optim: str = _spec(
        SFTConfig, "optim", "adamw_8bit", help="Optimizer (adamw_8bit becomes adamw_torch without CUDA)."
    )
    weight_decay: float = _spec(SFTConfig, "weight_decay", 0.01, help="AdamW weight decay.")
    lr_scheduler_type: str = _spec(SFTConfig, "lr_scheduler_type", "linear", help="Learning-rate schedule.")
    seed: int = _spec(SFTConfig, "seed", 3407, help="Seed of data order and dropout.")
    logging_steps: float = _spec(SFTConfig, "logging_steps", 1, help="Steps between loss records in train_log.json.")
    completion_only_loss: Optional[bool] = _spec(
        SFTConfig,
        "completion_only_loss",
        False,
        help="Train on the answer tokens only (after the prompt), like Unsloth's train_on_responses_only; "
        "off by default, as in our users' notebooks (the whole text).",
    )
    save_strategy: str = _spec(
        SFTConfig,
        "save_strategy",
        "no",
        help="Trainer checkpoints: no (the recipe saves the adapter itself), steps or epoch.",
    )
    dataset_num_proc: Optional[int] = _spec(SFTConfig, "dataset_num_proc", 1)
    packing: bool = _spec(SFTConfig, "packing", False)  # TRL's default; declared for settings_record
    precision: Literal["auto", "bf16", "fp16", "fp32"] = field(
        default="auto",
        metadata={"help": "auto (bf16 where supported else fp16 on GPU; fp32 on CPU), bf16, fp16 or fp32."},
    )
    # Set from `precision`, by the trainer builder for the backend, or by the recipe (which pushes the
    # final folder itself, under --push-to-hub user/name).
    bf16: Optional[bool] = _hidden(SFTConfig, "bf16", None)
    fp16: bool = _hidden(SFTConfig, "fp16", False)
    gradient_checkpointing: bool = _hidden(SFTConfig, "gradient_checkpointing", False)
    push_to_hub: bool = _hidden(SFTConfig, "push_to_hub", False)
    if "max_seq_length" in _SFT_FIELDS:
        # Unsloth's SFTConfig (trl.SFTConfig once unsloth is imported) adds max_seq_length beside TRL's
        # max_length: one setting here (--max-seq-length is max_length's alias), copied there in __post_init__.
        max_seq_length: Optional[int] = _hidden(SFTConfig, "max_seq_length", None)

    def __post_init__(self) -> None:
        check_range("--max-seq-length", self.max_length, min=8)
        check_range("per_device_train_batch_size", self.per_device_train_batch_size, min=1)
        check_range("gradient_accumulation_steps", self.gradient_accumulation_steps, min=1)
        check_range("warmup_steps", self.warmup_steps, min=0)
        check_range("max_steps", self.max_steps, min=1, also=(-1,))
        check_range("num_train_epochs", self.num_train_epochs, gt=0)
        check_range("learning_rate", self.learning_rate, gt=0, max=1)
        check_range("weight_decay", self.weight_decay, min=0)
        check_range("seed", self.seed, min=0)
        check_range("logging_steps", self.logging_steps, min=1)
        check_choice("precision", self.precision, PRECISIONS)
        self.optim_requested = str(getattr(self.optim, "value", self.optim))
        optim, self.optim_note = resolve_optimizer(self.optim_requested)
        self.optim = optim
        self.precision = resolve_precision(self.precision)  # type: ignore[assignment]
        self.bf16, self.fp16 = self.precision == "bf16", self.precision == "fp16"
        from llama_unsloth.import_utils import cuda_available

        if "max_seq_length" in _SFT_FIELDS:
            self.max_seq_length = self.max_length
        self.dataloader_pin_memory = bool(getattr(self, "dataloader_pin_memory", True)) and cuda_available()
        super().__post_init__()


# ---------------------------------------------------------------------------------------------- the record
def declared_options(cls: type) -> List[dataclasses.Field]:
    """The options ``cls`` declares itself (our defaults, our settings), not the ones it inherits unchanged.

    A dataclass hands its parents' ``Field`` objects down as they are and makes new ones for what it
    declares, so identity tells the two apart; ``init=False`` fields are not options.
    """
    inherited = [getattr(base, "__dataclass_fields__", {}) for base in cls.__mro__[1:]]
    return [
        f
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and all(parent.get(f.name) is not f for parent in inherited)
    ]


def setting_name(option: dataclasses.Field) -> str:
    """The name a setting goes by: its first flag alias (``--r`` -> ``r``, ``--model`` -> ``model``), else the field."""
    aliases = option.metadata.get("aliases") or ()
    return aliases[0].lstrip("-").replace("-", "_") if aliases else option.name


def settings_record(*configs: Any, **used: Any) -> Dict[str, Any]:
    """The settings of a run, as ``train_log.json`` and the model card show them.

    Every option the configs' classes declare (:func:`declared_options`), under its
    :func:`setting_name`, with enum values as their plain value (TRL turns ``optim`` and the schedule
    into enums); then ``used``, what the run resolved at run time (the backend, the dtype loaded...).

    Args:
        *configs: Parsed :class:`FinetuneScriptArguments`, :class:`LoraModelConfig`, :class:`FinetuneSFTConfig`.
        **used: Settings by record name whose resolved value replaces the parsed one.

    Raises:
        ValueError: A name in ``used`` that is no setting (a typo would add a row nobody asked for).
    """
    record: Dict[str, Any] = {}
    for config in configs:
        for option in declared_options(type(config)):
            value = getattr(config, option.name)
            record[setting_name(option)] = value.value if isinstance(value, enum.Enum) else value
    unknown = sorted(set(used) - set(record))
    if unknown:
        raise ValueError(f"Not settings of this run: {', '.join(unknown)}.")
    record.update(used)
    return record


__all__ = [
    "DTYPES",
    "SAVE_METHODS",
    "TARGET_MODULES",
    "FinetuneSFTConfig",
    "FinetuneScriptArguments",
    "LoraModelConfig",
    "declared_options",
    "setting_name",
    "settings_record",
]
