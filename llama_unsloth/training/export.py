"""What a run leaves behind: the adapter or merged model, ``train_log.json``, ``loss.png``, the model card, the Hub copy."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from llama_unsloth.errors import HubTokenError
from llama_unsloth.layouts import PromptFormat, write_chat_template
from llama_unsloth.models import adapter_base, auto_dtype, is_prequantized, nf4_config
from llama_unsloth.training.trainer import TrainingSummary

TRAIN_LOG_FILE = "train_log.json"
LOSS_PLOT_FILE = "loss.png"
MODEL_CARD_FILE = "README.md"
MERGED_FOLDER = "merged"
TOKEN_ENV = "HF_TOKEN"


# ---------------------------------------------------------------------------------------------- saving
def save_adapter(model: Any, tokenizer: Any, prompt_format: PromptFormat, folder: str | Path) -> Path:
    """Saves the LoRA adapter, the tokenizer and ``prompt_format.json`` into ``folder``.

    The tokenizer's chat template becomes the layout's (``chat_template.jinja``; the base model's is kept as
    ``chat_template.base.jinja``), so engines' chat endpoints prompt in the trained layout too.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    prompt_format.save(folder)
    write_chat_template(prompt_format, tokenizer, folder)
    return folder


def save_merged(
    model: Any, tokenizer: Any, prompt_format: PromptFormat, folder: str | Path, method: str, backend: str
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
    if backend == "unsloth" and method == "merged_16bit" and _base_is_prequantized(model):
        # Unsloth's merged_16bit re-reads the 16-bit base from disk (or the hub), and refuses a base that is
        # only on disk in 4 bits (a downloaded unsloth/*-bnb-4bit folder, offline): merge the weights in memory.
        warnings.warn(
            "The base model is a pre-quantized 4-bit checkpoint, so its 16-bit weights are not on disk: "
            "merged_16bit holds the 4-bit base weights (dequantized) with the adapter merged in.",
            stacklevel=2,
        )
        _save_merged_transformers(model, tokenizer, folder, method)
    elif backend == "unsloth":
        save_method = "merged_4bit_forced" if method == "merged_4bit" else "merged_16bit"
        model.save_pretrained_merged(str(folder), tokenizer, save_method=save_method)
    else:
        _save_merged_transformers(model, tokenizer, folder, method)
    prompt_format.save(folder)
    # Whichever backend wrote the tokenizer, its chat template is then the layout's (the base one kept beside it).
    write_chat_template(prompt_format, tokenizer, folder)
    return folder


def merged_save_method(folder: str | Path) -> str:
    """What a merged folder really holds: ``merged_4bit`` (a bitsandbytes checkpoint) or ``merged_16bit``.

    Read from the folder's ``config.json``, not from the method asked for: without CUDA and bitsandbytes a
    ``merged_4bit`` save writes 16-bit weights, and the model card must say how to serve what is there.
    """
    return "merged_4bit" if is_prequantized(str(folder)) else "merged_16bit"


def _base_is_prequantized(model: Any) -> bool:
    """True when the adapter's base model folder is a bitsandbytes-quantized checkpoint."""
    # The adapter's record of its base, and the folder the loaded base came from (the same folder when
    # both are set; either alone is enough).
    bases = [adapter_base(model), getattr(getattr(model, "config", None), "_name_or_path", None)]
    return any(base and is_prequantized(str(base)) for base in bases)


def _save_merged_transformers(model: Any, tokenizer: Any, folder: Path, method: str) -> None:
    """Merges in memory (PEFT's ``merge_and_unload``) and writes 16-bit, or NF4 through a 16-bit staging copy."""
    from llama_unsloth.import_utils import is_bitsandbytes_available

    merged = model.merge_and_unload()
    quantized = getattr(merged, "is_loaded_in_4bit", False) or getattr(merged, "is_loaded_in_8bit", False)
    if method == "merged_4bit" and quantized:
        merged.save_pretrained(str(folder))  # bitsandbytes 4-bit serialization
        tokenizer.save_pretrained(str(folder))
        return
    if quantized:
        merged = merged.dequantize()
    dtype16 = auto_dtype(sixteen_bit=True)
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
    from transformers import AutoModelForCausalLM

    staging = Path(tempfile.mkdtemp(prefix="merged16.", dir=folder.parent))
    try:
        merged.save_pretrained(str(staging))
        quantized_model = AutoModelForCausalLM.from_pretrained(
            str(staging), quantization_config=nf4_config(dtype16), device_map="auto"
        )
        quantized_model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- reporting
def write_train_log(path: str | Path, summary: TrainingSummary, settings: Mapping[str, Any], **extra: Any) -> Path:
    """Writes ``train_log.json``: per-step loss, learning rate, epoch and step time, the final loss and settings."""
    path = Path(path)
    data = {
        "final_loss": summary.final_loss,
        "train_loss": summary.train_loss,
        "global_step": summary.global_step,
        "max_steps": summary.max_steps,
        "seconds": round(summary.seconds, 2),
        "mean_step_seconds": summary.mean_step_seconds(),
        "median_step_seconds": summary.median_step_seconds(),
        "peak_gpu_memory_gib": peak_gpu_memory_gib(),
        "peak_gpu_memory_reserved_gib": peak_gpu_memory_gib(reserved=True),
        **extra,
        "settings": dict(settings),
        "steps": summary.steps,
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def plot_loss(path: str | Path, summary: TrainingSummary, title: str = "Training loss") -> Optional[Path]:
    """Draws loss against step into a PNG (matplotlib's Agg canvas; no display needed).

    Returns:
        The path, or ``None`` when no step was logged.
    """
    points = [(s["step"], s["loss"]) for s in summary.steps if math.isfinite(s["loss"])]
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
    summary: TrainingSummary,
    interrupted: bool = False,
    merged: Optional[str] = None,
) -> str:
    """The ``README.md`` model card text for a fine-tuned adapter or merged model.

    Args:
        merged: What ``<output_dir>/merged`` really holds (:func:`merged_save_method`) once it is written;
            ``None``: what ``settings["save"]`` asked for.
    """
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    final = f"{summary.final_loss:.4f}" if summary.final_loss is not None else "n/a"
    status = (
        f"**Interrupted** (Ctrl-C) after {summary.global_step} of {summary.max_steps} steps."
        if interrupted
        else f"Completed {summary.global_step} steps."
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
| Training time | {summary.seconds:.1f} s |

## Use

```python
from llama_unsloth import UnslothLLM

llm = UnslothLLM.from_finetuned("path/to/this/folder")  # prompted in the `{prompt_format.name}` layout it was trained on
print(llm.complete("Your question"))
```

`prompt_format.json` holds the prompt layout; `train_log.json` the per-step loss; `loss.png` its plot.
{_serving_section(settings, merged)}
## Settings

| setting | value |
| --- | --- |
{rows}
"""


def _serving_section(settings: Mapping[str, Any], merged: Optional[str] = None) -> str:
    """How to serve the merged model with vLLM and prompt it in its layout from LlamaIndex (ServedLLM).

    ``merged`` is what the folder holds when it differs from what ``--save`` asked (a 16-bit fallback).
    """
    asked = settings.get("save", "lora")
    if asked not in ("merged_16bit", "merged_4bit"):
        return (
            "\n## Serve it\n\nvLLM serves a merged model: run the recipe again with `--save merged_16bit` (or `merged_4bit`); "
            "its model card then gives the exact `vllm serve` command.\n"
        )
    folder = f"{settings.get('output_dir', '.')}/{MERGED_FOLDER}"
    name = Path(str(settings.get("output_dir", "model"))).name or "model"
    save = merged or asked
    # vLLM reads bitsandbytes-quantized checkpoints only when told to; a 16-bit folder it reads as it is.
    quant = " --quantization bitsandbytes" if save == "merged_4bit" else ""
    fallback = ""
    if save != asked:
        why = " this machine had no CUDA GPU with bitsandbytes, so" if asked == "merged_4bit" else ""
        bits = "16-bit" if save == "merged_16bit" else "4-bit (bitsandbytes)"
        fallback = f"\n`--save {asked}` was asked, but{why} `{folder}` holds the merged model in **{bits}**.\n"
    return f"""
## Serve it
{fallback}
```bash
vllm serve {folder}{quant} --served-model-name {name} --port 8001
```

```python
from llama_unsloth.llms.served import ServedLLM

llm = ServedLLM.from_finetuned("{folder}", api_base="http://127.0.0.1:8001/v1", model="{name}")  # same prompts as UnslothLLM
```
"""


def peak_gpu_memory_gib(reserved: bool = False) -> Optional[float]:
    """Peak GPU memory torch allocated in this process (GiB), or reserved with ``reserved``; ``None`` without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    peak = torch.cuda.max_memory_reserved() if reserved else torch.cuda.max_memory_allocated()
    return round(peak / 2**30, 3)


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


def push_folder_to_hub(folder: str | Path, repo_id: str, token: str, private: bool = True) -> str:
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
        raise RuntimeError(
            f"Pushing {folder} to the Hub repository {repo_id} failed: {type(err).__name__}: {message}"
        ) from None
    return str(url)


__all__ = [
    "LOSS_PLOT_FILE",
    "MERGED_FOLDER",
    "MODEL_CARD_FILE",
    "TOKEN_ENV",
    "TRAIN_LOG_FILE",
    "environment_summary",
    "hub_token_from_env",
    "merged_save_method",
    "model_card",
    "peak_gpu_memory_gib",
    "plot_loss",
    "push_folder_to_hub",
    "save_adapter",
    "save_merged",
    "write_train_log",
]
