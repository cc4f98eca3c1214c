"""LoRA fine-tuning in pieces; the ``finetune`` recipe strings them together, and they work on their own::

    from llama_unsloth.training import arguments as A     # TRL's SFTConfig / ModelConfig with our defaults
    records = read_records("data.json")
    check_records(records, fmt, "data.json")                  # before any model loads
    model, tokenizer, backend = load_model(name, for_training=True)
    model = add_lora(model, backend, A.LoraModelConfig())
    dataset = to_text_dataset("data.json", fmt, tokenizer, max_length=2048)
    trainer = build_trainer(model, tokenizer, dataset, A.FinetuneSFTConfig(output_dir="out"), backend)
    trainer.train()
    save_adapter(model, tokenizer, fmt, "out")

* :mod:`~llama_unsloth.training.data`: reading, checking and tokenizing records.
* :mod:`~llama_unsloth.training.arguments`: every setting, once (imports trl: import it after unsloth).
* :mod:`~llama_unsloth.training.trainer`: LoRA per backend, the trainer, :class:`TrainingSummary`.
* :mod:`~llama_unsloth.training.export`: adapter/merged folders, train log, loss plot, model card, Hub.
* :mod:`~llama_unsloth.training.outputs`: the output folder, checked before loading; ``--overwrite_output_dir``.

Importing this package imports neither torch, transformers, peft nor trl.
"""

from llama_unsloth.errors import DatasetError, HubTokenError
from llama_unsloth.training.data import (
    check_records,
    file_sha256,
    read_records,
    render_text,
    to_text_dataset,
    tokenize_record,
)
from llama_unsloth.training.export import (
    LOSS_PLOT_FILE,
    MERGED_FOLDER,
    MODEL_CARD_FILE,
    TOKEN_ENV,
    TRAIN_LOG_FILE,
    environment_summary,
    hub_token_from_env,
    merged_save_method,
    model_card,
    peak_gpu_memory_gib,
    plot_loss,
    push_folder_to_hub,
    save_adapter,
    save_merged,
    write_train_log,
)
from llama_unsloth.training.memory import check_finetune_memory, estimate_finetune_memory, out_of_memory_error
from llama_unsloth.training.outputs import (
    OVERWRITE_FLAG,
    OutputPlan,
    clear_earlier_run,
    plan_output_dir,
    resolve_checkpoint,
)
from llama_unsloth.training.trainer import (
    TrainingSummary,
    add_lora,
    build_trainer,
    resolve_optimizer,
    resolve_precision,
)

# Kept here, not in arguments.py, so that checking a save method never imports trl.
SAVE_METHODS = ("lora", "merged_16bit", "merged_4bit")

__all__ = [
    "DatasetError",
    "HubTokenError",
    "LOSS_PLOT_FILE",
    "MERGED_FOLDER",
    "MODEL_CARD_FILE",
    "OVERWRITE_FLAG",
    "OutputPlan",
    "SAVE_METHODS",
    "TOKEN_ENV",
    "TRAIN_LOG_FILE",
    "TrainingSummary",
    "add_lora",
    "build_trainer",
    "check_finetune_memory",
    "check_records",
    "clear_earlier_run",
    "environment_summary",
    "estimate_finetune_memory",
    "file_sha256",
    "hub_token_from_env",
    "merged_save_method",
    "model_card",
    "out_of_memory_error",
    "peak_gpu_memory_gib",
    "plan_output_dir",
    "plot_loss",
    "push_folder_to_hub",
    "read_records",
    "render_text",
    "resolve_checkpoint",
    "resolve_optimizer",
    "resolve_precision",
    "save_adapter",
    "save_merged",
    "to_text_dataset",
    "tokenize_record",
    "write_train_log",
]
