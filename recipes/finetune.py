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

An output folder that already holds a run is refused before anything loads: `--overwrite_output_dir`
replaces that run (every file of it, `merged/` and checkpoints included, is removed first), and
`--save-strategy steps` then `--resume_from_checkpoint <output-dir>/checkpoint-<step>` (or `last`)
continues one, keeping its checkpoints. A folder holding files a fine-tune never writes is refused even
with the flag, and nothing in it is deleted.

The options are TRL's own: `SFTConfig` (every `SFTTrainer` setting, e.g. `--save-strategy steps`) and
`ModelConfig` (`--lora-r`/`--r`, `--lora-alpha`, `--use-rslora`, ...), with our users' notebook settings
as defaults (`llama_unsloth/training/arguments.py`); `llama-unsloth finetune --help` lists them all.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

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
    """What LoRA was put on, as PEFT recorded it (Phi-3's fused names after mapping), else what was asked."""
    config = (getattr(model, "peft_config", None) or {}).get("default")
    targets = getattr(config, "target_modules", None)
    if isinstance(targets, (set, frozenset, list, tuple)):
        return sorted(targets)
    return targets or asked


@dataclass
class _Data:
    """The training data, checked before any model loads, and the Hub token the run will push with."""

    file: str
    prompt_format: Any
    records: int
    sha256: str
    hub_token: Optional[str]


def run(script_args: Any, model_args: Any, training_args: Any, callbacks: Optional[Sequence[Any]] = None) -> int:
    """Runs the recipe with parsed arguments; returns the exit code (130 when interrupted by Ctrl-C).

    Raises:
        Any of :func:`llama_unsloth.errors.user_errors` for bad input (before a model loads where it can be
        checked then).
    """
    import torch

    from llama_unsloth import training as T
    from llama_unsloth.defaults import default_model_name
    from llama_unsloth.training.arguments import settings_record

    # The output folder first: a folder that cannot be written, or holds an earlier run without
    # --overwrite_output_dir, is one line before the data is read and long before a model loads.
    output = T.plan_output_dir(
        training_args.output_dir, training_args.overwrite_output_dir, training_args.resume_from_checkpoint
    )
    data = _check_data(script_args, training_args)
    model_name = model_args.model_name_or_path or default_model_name()
    memory = _memory_settings(model_args, training_args)
    _plan_memory(model_name, script_args, memory)
    model, tokenizer, backend = _load_with_lora(model_name, model_args, training_args)
    output_dir = Path(training_args.output_dir)
    created_output_dir = not output_dir.exists()
    _clear_earlier_run(output)
    trainer = _trainer(model, tokenizer, backend, data, output_dir, model_args, training_args, callbacks)
    try:
        summary, interrupted = _train(trainer, output.resume_from)
    except torch.OutOfMemoryError:
        step, steps = trainer.state.global_step, trainer.state.max_steps
        print(file=sys.stderr)  # the error line starts below the progress bar, not on it
        del trainer, model  # the GPU memory goes back before the error is built
        _remove_if_empty(output_dir, created_output_dir)
        raise T.out_of_memory_error(model_name, step, steps, **memory) from None

    T.save_adapter(model, tokenizer, data.prompt_format, output_dir)
    # The settings the run actually used: the parsed values after resolution (a CPU run trains with
    # adamw_torch in fp32 on a full-precision model), not the defaults asked for.
    settings = settings_record(
        script_args,
        model_args,
        training_args,
        model=model_name,
        backend=backend,
        output_dir=str(output_dir),
        load_in_4bit=bool(getattr(model, "is_loaded_in_4bit", False)),
        dtype=str(getattr(model, "dtype", model_args.dtype)).replace("torch.", ""),
        target_modules=_adapted_modules(model, model_args.lora_target_modules),
        optim=_optimizer(trainer),
    )
    card, plot = _write_reports(output_dir, model_name, backend, data, settings, summary, interrupted)
    if interrupted:
        _report_interrupted(summary, output_dir, plot, script_args.save)
        return EXIT_INTERRUPTED
    final_folder = _save_final(model, tokenizer, backend, data, output_dir, card, script_args.save)
    url = _push(final_folder, data.hub_token, script_args)
    _report_done(summary, backend, data, output_dir, final_folder, url)
    return 0


# ---------------------------------------------------------------------------------------------- before loading
def _check_data(script_args: Any, training_args: Any) -> _Data:
    """Reads and checks every record, and the Hub token: what can be wrong here fails before a model loads."""
    from llama_unsloth import training as T
    from llama_unsloth.import_utils import require_trainable_trl
    from llama_unsloth.layouts import PromptFormat

    prompt_format = PromptFormat.get(script_args.prompt_format, fields=script_args.prompt_fields)
    records = T.read_records(script_args.data)
    T.check_records(records, prompt_format, script_args.data)
    data = _Data(
        file=str(script_args.data),
        prompt_format=prompt_format,
        records=len(records),
        sha256=T.file_sha256(script_args.data),
        hub_token=T.hub_token_from_env() if script_args.push_to_hub else None,
    )
    logger.info("Data: %s (%d records, format %s) OK.", script_args.data, data.records, prompt_format.name)
    if getattr(training_args, "optim_note", None):
        logger.info("Note: %s", training_args.optim_note)
    require_trainable_trl()
    return data


def _memory_settings(model_args: Any, training_args: Any) -> Dict[str, Any]:
    """What the memory estimate reads from the options (the plan before loading, the advice after a CUDA OOM)."""
    return {
        "batch_size": training_args.per_device_train_batch_size,
        "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        "seq_length": training_args.max_length,
        "lora_r": model_args.lora_r,
        "target_modules": model_args.lora_target_modules,
        "load_in_4bit": model_args.load_in_4bit,
        # The optimizer asked for: a plan for a GPU made on a CPU machine (--gpu-memory-gib) keeps adamw_8bit.
        "optim": training_args.optim_requested,
        "gradient_checkpointing": model_args.use_gradient_checkpointing,
    }


def _plan_memory(model_name: str, script_args: Any, memory: Dict[str, Any]) -> None:
    """The memory plan, from config.json alone: a run that cannot fit stops here, not out of memory mid-run."""
    from llama_unsloth import training as T

    plan = T.check_finetune_memory(
        model_name, gpu_memory_gib=script_args.gpu_memory_gib, enforce=script_args.memory_check, **memory
    )
    if plan:
        logger.info(plan)


# ---------------------------------------------------------------------------------------------- training
def _load_with_lora(model_name: str, model_args: Any, training_args: Any) -> Tuple[Any, Any, str]:
    """``(model with LoRA adapters, tokenizer, backend)``."""
    from llama_unsloth import training as T
    from llama_unsloth.models import loading

    logger.info("Loading %s ...", model_name)
    # Through the module: tests replace loading.load_model to prove nothing loads before the checks.
    model, tokenizer, backend = loading.load_model(
        model_name,
        backend=model_args.backend,
        max_seq_length=training_args.max_length,
        load_in_4bit=model_args.load_in_4bit,
        dtype=model_args.dtype,
        trust_remote_code=training_args.trust_remote_code,
        for_training=True,
    )
    import transformers

    transformers.logging.set_verbosity_warning()
    return T.add_lora(model, backend, model_args, training_args.max_length), tokenizer, backend


def _trainer(
    model: Any,
    tokenizer: Any,
    backend: str,
    data: _Data,
    output_dir: Path,
    model_args: Any,
    training_args: Any,
    callbacks: Optional[Sequence[Any]],
) -> Any:
    """TRL's ``SFTTrainer`` over the tokenized records; the output folder exists from here on."""
    from llama_unsloth import training as T

    dataset = T.to_text_dataset(data.file, data.prompt_format, tokenizer, training_args.max_length)
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer = T.build_trainer(
        model, tokenizer, dataset, training_args, backend, model_args.use_gradient_checkpointing, callbacks
    )
    parameters = list(model.parameters())
    logger.info(
        "Training on the %s backend: %d trainable of %d parameters, optimizer %s, precision %s.",
        backend,
        sum(p.numel() for p in parameters if p.requires_grad),
        sum(p.numel() for p in parameters),
        _optimizer(trainer),
        training_args.precision,
    )
    return trainer


def _optimizer(trainer: Any) -> str:
    """The optimizer the trainer runs (TRL holds it as an enum)."""
    return str(getattr(trainer.args.optim, "value", trainer.args.optim))


def _train(trainer: Any, resume_from: Optional[Path] = None) -> Tuple[Any, bool]:
    """Trains (on from ``resume_from``, a checkpoint); Ctrl-C stops it and keeps what was trained.

    Returns:
        The summary and whether it was interrupted.
    """
    from llama_unsloth import training as T

    interrupted = False
    began = time.time()
    try:
        # TrainingArguments.resume_from_checkpoint is "not directly used by Trainer": it is handed over here.
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except KeyboardInterrupt:
        interrupted = True
        print(file=sys.stderr)  # the next line starts below the progress bar, not on it
        logger.warning(
            "Interrupted at step %d of %d: saving the adapter trained so far ...",
            trainer.state.global_step,
            trainer.state.max_steps,
        )
    return T.TrainingSummary.from_state(trainer.state, seconds=time.time() - began), interrupted


def _clear_earlier_run(output: Any) -> None:
    """Removes the earlier run's files (``--overwrite_output_dir``, or a resume's), once the model has loaded."""
    from llama_unsloth import training as T

    if output.remove:
        kept = " (its checkpoints kept for the resume)" if output.resume_from else ""
        logger.info(
            "Removing the earlier run's %d files and folders in %s%s ...", len(output.remove), output.folder, kept
        )
        T.clear_earlier_run(output)
    if output.resume_from:
        logger.info("Resuming from %s.", output.resume_from)


def _remove_if_empty(output_dir: Path, created: bool) -> None:
    """Takes back an output folder this run created when nothing was written into it."""
    if created and not any(output_dir.iterdir()):
        output_dir.rmdir()


# ---------------------------------------------------------------------------------------------- after training
def _write_reports(
    output_dir: Path,
    model_name: str,
    backend: str,
    data: _Data,
    settings: Dict[str, Any],
    summary: Any,
    interrupted: bool,
) -> Tuple[Callable[[Optional[str]], str], Optional[Path]]:
    """Writes ``train_log.json``, ``loss.png`` and the model card; returns the card's maker and the plot's path.

    The card is written now, so an adapter folder always has one; a merge rewrites it with what the merged
    folder really holds (the maker's argument: 16-bit where ``merged_4bit`` fell back without CUDA).
    """
    from llama_unsloth import training as T

    T.write_train_log(
        output_dir / T.TRAIN_LOG_FILE,
        summary,
        settings,
        interrupted=interrupted,
        backend=backend,
        base_model=model_name,
        data_file=data.file,
        data_sha256=data.sha256,
        records=data.records,
        prompt_format=data.prompt_format.name,
        optimizer=settings["optim"],  # what ran, as in the settings: adamw_torch on CPU
        precision=settings["precision"],
        environment=T.environment_summary(),
    )
    title = f"{Path(model_name).name} / {data.prompt_format.name}"
    plot = T.plot_loss(output_dir / T.LOSS_PLOT_FILE, summary, title=title)

    def card(merged: Optional[str] = None) -> str:
        return T.model_card(
            base_model=model_name,
            data_file=data.file,
            data_sha256=data.sha256,
            records=data.records,
            prompt_format=data.prompt_format,
            backend=backend,
            settings=settings,
            summary=summary,
            interrupted=interrupted,
            merged=merged,
        )

    (output_dir / T.MODEL_CARD_FILE).write_text(card(None), encoding="utf-8")
    return card, plot


def _report_interrupted(summary: Any, output_dir: Path, plot: Optional[Path], save: str) -> None:
    """Says what was kept after Ctrl-C, and what was skipped."""
    logger.warning(
        "Saved the adapter after %d steps to %s (with prompt_format.json, train_log.json%s). "
        "Skipped: --save %s and --push-to-hub. Load it with UnslothLLM.from_finetuned(%r).",
        summary.global_step,
        output_dir,
        ", loss.png" if plot else "",
        save,
        str(output_dir),
    )


def _save_final(
    model: Any,
    tokenizer: Any,
    backend: str,
    data: _Data,
    output_dir: Path,
    card: Callable[[Optional[str]], str],
    save: str,
) -> Path:
    """The folder the run hands over: the adapter folder, or ``<output-dir>/merged`` with ``--save merged_*``."""
    from llama_unsloth import training as T

    if save == "lora":
        return output_dir
    logger.info("Merging the adapter into the base model (%s) ...", save)
    folder = T.save_merged(model, tokenizer, data.prompt_format, output_dir / T.MERGED_FOLDER, save, backend)
    # Both cards tell how to serve what the folder holds, read back from it, not the method asked for.
    text = card(T.merged_save_method(folder))
    (output_dir / T.MODEL_CARD_FILE).write_text(text, encoding="utf-8")
    merged_card = text.replace("library_name: peft", "library_name: transformers")
    (folder / T.MODEL_CARD_FILE).write_text(merged_card, encoding="utf-8")
    return folder


def _push(folder: Path, token: Optional[str], script_args: Any) -> Optional[str]:
    """Uploads ``folder`` with ``--push-to-hub``; returns the repository URL."""
    from llama_unsloth import training as T

    if not (script_args.push_to_hub and token):
        return None
    logger.info("Uploading %s to the Hub repository %s ...", folder, script_args.push_to_hub)
    return T.push_folder_to_hub(folder, script_args.push_to_hub, token, private=script_args.hub_private)


def _report_done(
    summary: Any, backend: str, data: _Data, output_dir: Path, final_folder: Path, url: Optional[str]
) -> None:
    """The closing lines: steps, loss, where each thing is and how to load it."""
    from llama_unsloth import training as T

    final = f"{summary.final_loss:.4f}" if summary.final_loss is not None else "n/a"
    name = data.prompt_format.name
    lines = [
        f"Done: {summary.global_step} steps in {summary.seconds:.1f} s, final loss {final} ({backend} backend, {name} format).",
        f"  adapter:    {output_dir}",
    ]
    if final_folder != output_dir:
        lines.append(f"  merged:     {final_folder}")
    lines.append(f"  log, plot:  {output_dir / T.TRAIN_LOG_FILE}, {output_dir / T.LOSS_PLOT_FILE}")
    if url:
        lines.append(f"  hub:        {url}")
    lines.append(f"  use:        UnslothLLM.from_finetuned({str(final_folder)!r})")
    logger.info("\n".join(lines))


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
