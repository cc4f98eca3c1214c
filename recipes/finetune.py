"""Fine-tune a model with LoRA on a JSON/JSONL file, saving an adapter that remembers its prompt layout.

CPU, offline (the bundled SmolLM2-135M-Instruct; a few minutes):
```bash
llama-unsloth finetune \
    --data llama_unsloth/data/finetune_alpaca.json \
    --prompt-format alpaca \
    --max-steps 30 --per-device-train-batch-size 2 --gradient-accumulation-steps 1 \
    --max-seq-length 512 \
    --output-dir outputs/smollm2-alpaca
```

GPU with Unsloth (the settings of Unsloth's notebooks are the defaults), merged to 4-bit and pushed:
```bash
export HF_TOKEN=hf_...                      # read from the environment only, never written anywhere
python -m recipes.finetune \
    --model unsloth/Mistral-Nemo-Instruct-2407-bnb-4bit \
    --data my_data.jsonl \
    --prompt-format my_layout.j2 \
    --output-dir outputs/nemo-rag \
    --save merged_4bit \
    --push-to-hub my-user/nemo-rag
```

The output folder holds the LoRA adapter, its tokenizer, `prompt_format.json` (so
`UnslothLLM.from_finetuned(folder)` prompts the model the way it was trained), `train_log.json`,
`loss.png` and a `README.md` model card; `--save merged_16bit|merged_4bit` adds a full model in
`<output-dir>/merged`. Every record is checked before any model loads. Ctrl-C stops training and
saves the adapter trained so far. Options can also come from `--config file.yaml`.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

from recipes.config import parse_config

logger = logging.getLogger("llama_unsloth.finetune")

EXIT_INTERRUPTED = 130


@dataclass
class FinetuneConfig:
    """Options of the finetune recipe (every field is a ``--flag``)."""

    data: str = field(metadata={"help": "Training data: a JSON array of records or a JSON Lines file (required)."})
    prompt_format: str = field(
        default="alpaca",
        metadata={"help": "Prompt layout: alpaca, alpaca-context, instruction-context, reasoning, chat, or a template file "
                  "(.j2 Jinja2, or a Python format string with --prompt-fields). Default: %(default)s."},
    )
    prompt_fields: Optional[List[str]] = field(
        default=None,
        metadata={"help": "Roles of a Python format template's positional {} placeholders, in order, e.g. "
                  "--prompt-fields instruction input output (see examples/templates/)."},
    )
    model: Optional[str] = field(
        default=None,
        metadata={"help": "Hub id or local folder of the base model. Default: $LLAMA_UNSLOTH_MODEL or the offline SmolLM2-135M-Instruct."},
    )
    output_dir: str = field(default="outputs/finetune", metadata={"help": "Folder for the adapter, logs and model card. Default: %(default)s."})
    backend: str = field(default="auto", metadata={"help": "auto (Unsloth when CUDA is available), unsloth or transformers. Default: %(default)s."})
    max_seq_length: int = field(default=2048, metadata={"help": "Longest training sequence in tokens (longer texts are truncated). Default: %(default)s."})
    load_in_4bit: bool = field(default=True, metadata={"help": "Load the base model in bitsandbytes 4-bit (full precision on CPU). Default: %(default)s."})
    dtype: Optional[str] = field(default=None, metadata={"help": "Model dtype: float32, bfloat16, float16; unset = bf16/fp16 on GPU, fp32 on CPU."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run code shipped with the model. Default: %(default)s."})
    # LoRA
    r: int = field(default=16, metadata={"help": "LoRA rank. Default: %(default)s."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha. Default: %(default)s."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout. Default: %(default)s."})
    target_modules: List[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        metadata={"help": "Layers that get LoRA adapters. Default: %(default)s."},
    )
    use_gradient_checkpointing: str = field(
        default="unsloth",
        metadata={"help": "unsloth (Unsloth's offloaded checkpointing; plain checkpointing on transformers), true or false. Default: %(default)s."},
    )
    random_state: int = field(default=3407, metadata={"help": "Seed of the LoRA initialisation. Default: %(default)s."})
    # Trainer
    per_device_train_batch_size: int = field(default=2, metadata={"help": "Sequences per forward pass. Default: %(default)s."})
    gradient_accumulation_steps: int = field(default=4, metadata={"help": "Forward passes per optimizer step. Default: %(default)s."})
    warmup_steps: int = field(default=5, metadata={"help": "Learning-rate warm-up steps. Default: %(default)s."})
    max_steps: int = field(default=100, metadata={"help": "Optimizer steps; -1 trains --num-train-epochs epochs. Default: %(default)s."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs when --max-steps is -1. Default: %(default)s."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate. Default: %(default)s."})
    optim: str = field(default="adamw_8bit", metadata={"help": "Optimizer (adamw_8bit becomes adamw_torch without CUDA). Default: %(default)s."})
    weight_decay: float = field(default=0.01, metadata={"help": "Weight decay. Default: %(default)s."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "Learning-rate schedule. Default: %(default)s."})
    seed: int = field(default=3407, metadata={"help": "Seed of data order and dropout. Default: %(default)s."})
    precision: str = field(default="auto", metadata={"help": "auto (bf16 where supported else fp16 on GPU; fp32 on CPU), bf16, fp16 or fp32. Default: %(default)s."})
    logging_steps: int = field(default=1, metadata={"help": "Steps between loss records in train_log.json. Default: %(default)s."})
    packing: bool = field(default=False, metadata={"help": "Pack short texts into full-length sequences. Default: %(default)s."})
    completion_only_loss: bool = field(default=False, metadata={"help": "Train on the answer tokens only (after the prompt), like Unsloth's train_on_responses_only. Default: %(default)s."})
    # Output
    save: str = field(default="lora", metadata={"help": "lora (adapter only), merged_16bit or merged_4bit (full model in <output-dir>/merged too). Default: %(default)s."})
    push_to_hub: Optional[str] = field(default=None, metadata={"help": "Hub repository (user/name) to upload to; the token comes from $HF_TOKEN only."})
    hub_private: bool = field(default=True, metadata={"help": "Create the Hub repository as private. Default: %(default)s."})


# Numeric options, checked by parse_config as the command starts (before any model loads; exit 2, one
# line, nothing created). max_steps -1 means "train --num-train-epochs epochs".
OPTION_RULES = {
    "max_seq_length": {"min": 8},
    "r": {"min": 1},
    "lora_alpha": {"min": 1},
    "lora_dropout": {"min": 0, "lt": 1},
    "random_state": {"min": 0},
    "per_device_train_batch_size": {"min": 1},
    "gradient_accumulation_steps": {"min": 1},
    "warmup_steps": {"min": 0},
    "max_steps": {"min": 1, "also": (-1,)},
    "num_train_epochs": {"gt": 0},
    "learning_rate": {"gt": 0, "max": 1},
    "weight_decay": {"min": 0},
    "seed": {"min": 0},
    "logging_steps": {"min": 1},
}


def check_options(config: "FinetuneConfig") -> None:
    """Checks beyond single numbers, before any model loads: a base model that cannot load offline."""
    from recipes.config import check_model_option

    check_model_option(config.model)


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.setLevel(logging.INFO)


def run(config: FinetuneConfig, callbacks: Optional[Sequence[Any]] = None) -> int:
    """Runs the recipe with a parsed config; returns the exit code (130 when interrupted by Ctrl-C)."""
    from llama_unsloth import loading
    from llama_unsloth import training as T
    from llama_unsloth.prompts import PromptFormat

    for option, value, valid in (
        ("save", config.save, T.SAVE_METHODS),
        ("backend", config.backend, loading.BACKENDS),
        ("precision", config.precision, ("auto", "bf16", "fp16", "fp32")),
        ("use-gradient-checkpointing", config.use_gradient_checkpointing.lower(), ("unsloth", "true", "false")),
    ):
        if value not in valid:
            raise SystemExit(f"finetune: --{option} must be one of {', '.join(valid)}, got {value!r}.")
    prompt_format = PromptFormat.get(config.prompt_format, fields=config.prompt_fields)

    # Everything about the data is checked before a model loads (minutes on a GPU machine).
    records = T.read_records(config.data)
    T.check_records(records, prompt_format, config.data)
    data_sha256 = T.file_sha256(config.data)
    token = T.hub_token_from_env() if config.push_to_hub else None
    logger.info("Data: %s (%d records, format %s) OK.", config.data, len(records), prompt_format.name)

    from llama_unsloth.defaults import default_model_name

    model_name = config.model or default_model_name()
    logger.info("Loading %s ...", model_name)
    # Loading first: on a GPU machine this imports unsloth before transformers, peft and trl.
    model, tokenizer, backend = loading.load_model(
        model_name,
        backend=config.backend,
        max_seq_length=config.max_seq_length,
        load_in_4bit=config.load_in_4bit,
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
        for_training=True,
    )
    import transformers

    transformers.logging.set_verbosity_warning()
    lora = T.LoraSettings(
        r=config.r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        use_gradient_checkpointing=config.use_gradient_checkpointing,
        random_state=config.random_state,
        max_seq_length=config.max_seq_length,
    )
    model = T.add_lora(model, backend, lora)
    dataset = T.to_text_dataset(config.data, prompt_format, tokenizer, config.max_seq_length)
    settings = T.TrainSettings(
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=config.warmup_steps,
        max_steps=config.max_steps,
        num_train_epochs=config.num_train_epochs,
        learning_rate=config.learning_rate,
        optim=config.optim,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler_type,
        seed=config.seed,
        max_seq_length=config.max_seq_length,
        precision=config.precision,
        logging_steps=config.logging_steps,
        packing=config.packing,
        completion_only_loss=config.completion_only_loss,
    )
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    history = T.TrainingHistory()
    trainer = T.build_trainer(
        model, tokenizer, dataset, settings, output_dir, backend, history, callbacks, config.use_gradient_checkpointing
    )
    trainable, total = (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))
    logger.info(
        "Training on the %s backend: %d trainable of %d parameters, optimizer %s, precision %s.",
        backend, trainable, total, getattr(trainer.args.optim, "value", trainer.args.optim), T.resolve_precision(config.precision),
    )

    interrupted = False
    try:
        trainer.train()
    except KeyboardInterrupt:
        interrupted = True
        print(file=sys.stderr)
        logger.warning("Interrupted at step %d of %d: saving the adapter trained so far ...", history.global_step, history.max_steps)
    history.finished = time.time()

    T.save_adapter(model, tokenizer, prompt_format, output_dir)
    extra = {
        "interrupted": interrupted,
        "backend": backend,
        "base_model": model_name,
        "data_file": str(config.data),
        "data_sha256": data_sha256,
        "records": len(records),
        "prompt_format": prompt_format.name,
        "optimizer": getattr(trainer.args.optim, "value", trainer.args.optim),
        "precision": T.resolve_precision(config.precision),
        "environment": T.environment_summary(),
    }
    # The settings the run actually used (a CPU run trains with adamw_torch in fp32 on a full-precision model).
    used = {
        **asdict(config),
        "model": model_name,
        "optim": extra["optimizer"],
        "precision": extra["precision"],
        "load_in_4bit": bool(getattr(model, "is_loaded_in_4bit", False)),
    }
    T.write_train_log(output_dir / T.TRAIN_LOG_FILE, history, used, **extra)
    plot = T.plot_loss(output_dir / T.LOSS_PLOT_FILE, history, title=f"{Path(model_name).name} / {prompt_format.name}")
    card = T.model_card(
        base_model=model_name, data_file=str(config.data), data_sha256=data_sha256, records=len(records),
        prompt_format=prompt_format, backend=backend, settings=used, history=history, interrupted=interrupted,
    )
    (output_dir / T.MODEL_CARD_FILE).write_text(card, encoding="utf-8")
    if interrupted:
        logger.warning(
            "Saved the adapter after %d steps to %s (with prompt_format.json, train_log.json%s). "
            "Skipped: --save %s and --push-to-hub. Load it with UnslothLLM.from_finetuned(%r).",
            history.global_step, output_dir, ", loss.png" if plot else "", config.save, str(output_dir),
        )
        return EXIT_INTERRUPTED

    final_folder = output_dir
    if config.save != "lora":
        logger.info("Merging the adapter into the base model (%s) ...", config.save)
        final_folder = T.save_merged(model, tokenizer, prompt_format, output_dir / T.MERGED_FOLDER, config.save, backend)
        (final_folder / T.MODEL_CARD_FILE).write_text(card.replace("library_name: peft", "library_name: transformers"), encoding="utf-8")
    url = None
    if config.push_to_hub and token:
        logger.info("Uploading %s to the Hub repository %s ...", final_folder, config.push_to_hub)
        url = T.push_folder_to_hub(final_folder, config.push_to_hub, token, private=config.hub_private)

    final = f"{history.final_loss:.4f}" if history.final_loss is not None else "n/a"
    lines = [
        f"Done: {history.global_step} steps in {history.seconds:.1f} s, final loss {final} ({backend} backend, {prompt_format.name} format).",
        f"  adapter:    {output_dir}",
    ]
    if final_folder != output_dir:
        lines.append(f"  merged:     {final_folder}")
    lines.append(f"  log, plot:  {output_dir / T.TRAIN_LOG_FILE}, {output_dir / T.LOSS_PLOT_FILE}")
    if url:
        lines.append(f"  hub:        {url}")
    lines.append(f"  use:        UnslothLLM.from_finetuned({str(final_folder)!r})")
    logger.info("\n".join(lines))
    return 0


def main(argv: Optional[Sequence[str]] = None, callbacks: Optional[Sequence[Any]] = None) -> int:
    """``python -m recipes.finetune [options]``; ``callbacks`` are extra ``TrainerCallback`` objects."""
    config = parse_config(FinetuneConfig, argv, description=__doc__, rules=OPTION_RULES, check=check_options)
    _setup_logging()
    from llama_unsloth.loading import ModelLoadError
    from llama_unsloth.prompts import PromptFormatError
    from llama_unsloth.training import DatasetError, HubTokenError

    try:
        return run(config, callbacks)
    except (DatasetError, PromptFormatError, HubTokenError, ModelLoadError, FileNotFoundError) as err:
        raise SystemExit(f"finetune: {err}") from None


if __name__ == "__main__":
    sys.exit(main())
