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

The options are TRL's own: `SFTConfig` (every `SFTTrainer` setting, e.g. `--save-strategy steps`) and
`ModelConfig` (`--lora-r`/`--r`, `--lora-alpha`, `--use-rslora`, ...), with our users' notebook settings
as defaults (`llama_unsloth/training/arguments.py`); `llama-unsloth finetune --help` lists them all.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Sequence

logger = logging.getLogger("llama_unsloth.finetune")

EXIT_INTERRUPTED = 130


def make_parser():  # noqa: ANN201 - RecipeParser, imported lazily (it imports trl)
    """TRL's parser over (script arguments, ``ModelConfig``, ``SFTConfig``), with our users' defaults."""
    from llama_unsloth.training.arguments import FinetuneScriptArguments, FinetuneSFTConfig, LoraModelConfig
    from recipes.config import make_parser as parser_over

    return parser_over((FinetuneScriptArguments, LoraModelConfig, FinetuneSFTConfig), description=__doc__)


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    # unsloth's import calls logging.basicConfig(level=WARNING, format="[%(name)s|%(levelname)s]%(message)s"):
    # our lines keep their plain form, and the library's notes (its loggers inherit the root's WARNING) show.
    for handler in root.handlers:
        if handler.formatter is not None and str(handler.formatter._fmt).startswith("[%(name)s|%(levelname)s]"):
            handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("llama_unsloth").setLevel(logging.INFO)
    logger.setLevel(logging.INFO)


def _adapted_modules(model: Any, asked: Any) -> Any:
    config = (getattr(model, "peft_config", None) or {}).get("default")
    targets = getattr(config, "target_modules", None)
    if isinstance(targets, (set, frozenset, list, tuple)):
        return sorted(targets)
    return targets or asked


def run(script_args: Any, model_args: Any, training_args: Any, callbacks: Optional[Sequence[Any]] = None) -> int:
    """Runs the recipe with parsed arguments; returns the exit code (130 when interrupted by Ctrl-C).

    Raises:
        Any of :func:`llama_unsloth.errors.user_errors` for bad input (before a model loads where it can be
        checked then).
    """
    from llama_unsloth import training as T
    from llama_unsloth.defaults import default_model_name
    from llama_unsloth.layouts import PromptFormat
    from llama_unsloth.models import loading

    prompt_format = PromptFormat.get(script_args.prompt_format, fields=script_args.prompt_fields)
    # Everything about the data is checked before a model loads (minutes on a GPU machine).
    records = T.read_records(script_args.data)
    T.check_records(records, prompt_format, script_args.data)
    data_sha256 = T.file_sha256(script_args.data)
    token = T.hub_token_from_env() if script_args.push_to_hub else None
    logger.info("Data: %s (%d records, format %s) OK.", script_args.data, len(records), prompt_format.name)
    if getattr(training_args, "optim_note", None):
        logger.info("Note: %s", training_args.optim_note)

    from llama_unsloth.import_utils import require_trainable_trl

    require_trainable_trl()
    model_name = model_args.model_name_or_path or default_model_name()
    max_seq_length = training_args.max_length
    # The memory plan, from config.json alone: a run that cannot fit stops here, not out of memory mid-run.
    memory_settings = {
        "batch_size": training_args.per_device_train_batch_size,
        "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        "seq_length": max_seq_length,
        "lora_r": model_args.lora_r,
        "target_modules": model_args.lora_target_modules,
        "load_in_4bit": model_args.load_in_4bit,
        # The optimizer asked for: a plan for a GPU made on a CPU machine (--gpu-memory-gib) keeps adamw_8bit.
        "optim": training_args.optim_requested,
        "gradient_checkpointing": model_args.use_gradient_checkpointing,
    }
    plan = T.check_finetune_memory(
        model_name, gpu_memory_gib=script_args.gpu_memory_gib, enforce=script_args.memory_check, **memory_settings
    )
    if plan:
        logger.info(plan)
    logger.info("Loading %s ...", model_name)
    model, tokenizer, backend = loading.load_model(
        model_name,
        backend=model_args.backend,
        max_seq_length=max_seq_length,
        load_in_4bit=model_args.load_in_4bit,
        dtype=model_args.dtype,
        trust_remote_code=training_args.trust_remote_code,
        for_training=True,
    )
    import transformers

    transformers.logging.set_verbosity_warning()
    model = T.add_lora(model, backend, model_args, max_seq_length)
    dataset = T.to_text_dataset(script_args.data, prompt_format, tokenizer, max_seq_length)
    output_dir = Path(training_args.output_dir)
    created_output_dir = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer = T.build_trainer(
        model, tokenizer, dataset, training_args, backend, model_args.use_gradient_checkpointing, callbacks
    )
    optimizer = str(getattr(trainer.args.optim, "value", trainer.args.optim))
    trainable, total = (
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        sum(p.numel() for p in model.parameters()),
    )
    logger.info(
        "Training on the %s backend: %d trainable of %d parameters, optimizer %s, precision %s.",
        backend,
        trainable,
        total,
        optimizer,
        training_args.precision,
    )

    interrupted = False
    began = time.time()
    import torch

    try:
        trainer.train()
    except torch.OutOfMemoryError:
        step, steps = trainer.state.global_step, trainer.state.max_steps
        print(file=sys.stderr)  # the error line starts below the progress bar, not on it
        del trainer, model
        if created_output_dir and not any(output_dir.iterdir()):
            output_dir.rmdir()  # nothing half-written: the run saved nothing
        raise T.out_of_memory_error(model_name, step, steps, **memory_settings) from None
    except KeyboardInterrupt:
        interrupted = True
        print(file=sys.stderr)
        logger.warning(
            "Interrupted at step %d of %d: saving the adapter trained so far ...",
            trainer.state.global_step,
            trainer.state.max_steps,
        )
    summary = T.TrainingSummary.from_state(trainer.state, seconds=time.time() - began)

    T.save_adapter(model, tokenizer, prompt_format, output_dir)
    extra = {
        "interrupted": interrupted,
        "backend": backend,
        "base_model": model_name,
        "data_file": str(script_args.data),
        "data_sha256": data_sha256,
        "records": len(records),
        "prompt_format": prompt_format.name,
        "optimizer": optimizer,
        "precision": training_args.precision,
        "environment": T.environment_summary(),
    }
    # The settings the run actually used: the parsed values after resolution (a CPU run trains with
    # adamw_torch in fp32 on a full-precision model), not the defaults asked for.
    used = {
        **asdict(script_args),
        "model": model_name,
        "backend": backend,
        "output_dir": str(output_dir),
        "max_seq_length": max_seq_length,
        "load_in_4bit": bool(getattr(model, "is_loaded_in_4bit", False)),
        "dtype": str(getattr(model, "dtype", model_args.dtype)).replace("torch.", ""),
        "r": model_args.lora_r,
        "lora_alpha": model_args.lora_alpha,
        "lora_dropout": model_args.lora_dropout,
        # What LoRA was put on (Phi-3's fused names after mapping), as PEFT recorded it; not only what was asked.
        "target_modules": _adapted_modules(model, model_args.lora_target_modules),
        "use_rslora": model_args.use_rslora,
        "use_gradient_checkpointing": model_args.use_gradient_checkpointing,
        "random_state": model_args.random_state,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        "warmup_steps": training_args.warmup_steps,
        "max_steps": training_args.max_steps,
        "num_train_epochs": training_args.num_train_epochs,
        "learning_rate": training_args.learning_rate,
        "optim": optimizer,
        "weight_decay": training_args.weight_decay,
        "lr_scheduler_type": str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)),
        "seed": training_args.seed,
        "precision": training_args.precision,
        "logging_steps": training_args.logging_steps,
        "packing": training_args.packing,
        "completion_only_loss": training_args.completion_only_loss,
    }
    T.write_train_log(output_dir / T.TRAIN_LOG_FILE, summary, used, **extra)
    plot = T.plot_loss(output_dir / T.LOSS_PLOT_FILE, summary, title=f"{Path(model_name).name} / {prompt_format.name}")
    card = T.model_card(
        base_model=model_name,
        data_file=str(script_args.data),
        data_sha256=data_sha256,
        records=len(records),
        prompt_format=prompt_format,
        backend=backend,
        settings=used,
        summary=summary,
        interrupted=interrupted,
    )
    (output_dir / T.MODEL_CARD_FILE).write_text(card, encoding="utf-8")
    if interrupted:
        logger.warning(
            "Saved the adapter after %d steps to %s (with prompt_format.json, train_log.json%s). "
            "Skipped: --save %s and --push-to-hub. Load it with UnslothLLM.from_finetuned(%r).",
            summary.global_step,
            output_dir,
            ", loss.png" if plot else "",
            script_args.save,
            str(output_dir),
        )
        return EXIT_INTERRUPTED

    final_folder = output_dir
    if script_args.save != "lora":
        logger.info("Merging the adapter into the base model (%s) ...", script_args.save)
        final_folder = T.save_merged(
            model, tokenizer, prompt_format, output_dir / T.MERGED_FOLDER, script_args.save, backend
        )
        (final_folder / T.MODEL_CARD_FILE).write_text(
            card.replace("library_name: peft", "library_name: transformers"), encoding="utf-8"
        )
    url = None
    if script_args.push_to_hub and token:
        logger.info("Uploading %s to the Hub repository %s ...", final_folder, script_args.push_to_hub)
        url = T.push_folder_to_hub(final_folder, script_args.push_to_hub, token, private=script_args.hub_private)

    final = f"{summary.final_loss:.4f}" if summary.final_loss is not None else "n/a"
    lines = [
        f"Done: {summary.global_step} steps in {summary.seconds:.1f} s, final loss {final} ({backend} backend, {prompt_format.name} format).",
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
    from recipes.config import check_model_option, exit_on_user_error, start

    # unsloth is imported before trl/transformers/peft (make_parser imports TRL's config classes).
    script_args, model_args, training_args = start(make_parser, argv)
    _setup_logging()
    with exit_on_user_error():
        check_model_option(model_args.model_name_or_path)
        return run(script_args, model_args, training_args, callbacks)


if __name__ == "__main__":
    sys.exit(main())
