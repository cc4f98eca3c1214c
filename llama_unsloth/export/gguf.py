"""A fine-tuned folder -> ``model-<quant>.gguf`` (llama.cpp's converter and quantizer) + an Ollama ``Modelfile``.

:func:`export_gguf` checks everything a user can get wrong first (a folder with no model, an unknown
quantization, q4_k_m without llama.cpp's quantizer, an architecture the converter does not know), each as
one :class:`~llama_unsloth.errors.ExportError` line, then:

1. stages a copy of the folder (weights linked, not copied): an adapter folder is merged into its base first
   (transformers on CPU, :func:`~llama_unsloth.training.save_merged`);
2. writes the layout's chat template and end token into the staged ``tokenizer_config.json``, so the GGUF's
   ``tokenizer.chat_template`` and ``tokenizer.ggml.eos_token_id`` are the trained layout's, not the base
   model's (llama.cpp's chat endpoint and its stop both read them);
3. converts (``--outtype f16`` / ``q8_0``; q4_k_m quantizes an f16 conversion), reads the metadata back and
   checks it, and writes the Modelfile beside the GGUF.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from llama_unsloth.errors import ExportError
from llama_unsloth.export.converter import (
    fetch_converter,
    is_byte_level_bpe,
    known_architectures,
    quantize,
    quantizer_python,
    run_converter,
)
from llama_unsloth.export.ollama import write_modelfile
from llama_unsloth.export.skeleton import end_token, layout_chat_template
from llama_unsloth.layouts import FORMAT_FILE, PromptFormat
from llama_unsloth.models import is_adapter_folder, read_model_config

#: Quantization -> (the converter's --outtype, llama_cpp's quantizer constant or None).
QUANTIZATIONS: Dict[str, tuple] = {
    "f16": ("f16", None),
    "q8_0": ("q8_0", None),
    "q4_k_m": ("f16", "LLAMA_FTYPE_MOSTLY_Q4_K_M"),
}
GGUF_FOLDER = "gguf"
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt")
_CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
# Per-token arrays: tens of thousands of values nobody checks by eye.
_LARGE_FIELDS = (
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.scores",
)


@dataclass(frozen=True)
class ExportPlan:
    """What an export will do, decided (and checked) before any work."""

    folder: Path
    quantization: str
    output_dir: Path
    prompt_format: PromptFormat
    architecture: str
    adapter: bool
    quantizer: Optional[str]


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote, read back from the GGUF."""

    gguf: Path
    modelfile: Path
    architecture: str
    chat_template: Optional[str]
    eos_token_id: int


def gguf_name(quantization: str) -> str:
    """The GGUF's file name: ``model-<quantization>.gguf``."""
    return f"model-{quantization}.gguf"


def _check_folder(folder: Path) -> bool:
    """Whether ``folder`` is an adapter folder; ExportError when it holds no model at all."""
    if not folder.is_dir():
        raise ExportError(f"{folder} is not a folder: point export at the folder the finetune recipe wrote.")
    adapter = is_adapter_folder(folder)
    weights = "adapter_model.*" if adapter else None
    has_config = adapter or (folder / "config.json").is_file()
    has_weights = any(folder.glob(weights)) if weights else any(any(folder.glob(p)) for p in _WEIGHTS)
    if not has_config or not has_weights:
        raise ExportError(
            f"{folder} holds no model (config.json and weights, or a LoRA adapter): point export at the "
            "folder the finetune recipe wrote (its merged/ folder or the adapter folder)."
        )
    return adapter


def _layout(folder: Path, prompt_format: Optional[str | PromptFormat]) -> PromptFormat:
    """The layout to export: the one given, else the folder's ``prompt_format.json``, else ``chat``."""
    if prompt_format is not None:
        return PromptFormat.get(prompt_format)
    if (folder / FORMAT_FILE).is_file():
        return PromptFormat.load(folder)
    return PromptFormat.get("chat")  # a plain model folder: its tokenizer's own chat template is its layout


def _architecture(folder: Path) -> str:
    """The folder's (or an adapter's base's) transformers architecture, from config.json."""
    config = read_model_config(str(folder))
    architectures = (config or {}).get("architectures") or []
    if not architectures:
        raise ExportError(
            f"{folder}: cannot read the model's architecture (config.json 'architectures'"
            + (", of the adapter's base model" if is_adapter_folder(folder) else "")
            + "): llama.cpp's converter needs it."
        )
    return str(architectures[0])


def plan_export(
    model_dir: str | Path,
    quantization: str,
    output_dir: Optional[str | Path] = None,
    prompt_format: Optional[str | PromptFormat] = None,
    say: Callable[[str], None] = print,
) -> ExportPlan:
    """Checks an export before any work (the converter is fetched once, to read the architectures it knows).

    Raises:
        ExportError: No model in the folder, an unknown quantization, q4_k_m without ``llama_cpp``, an
            architecture llama.cpp's converter does not know.
    """
    folder = Path(model_dir).expanduser()
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"--gguf must be one of {', '.join(QUANTIZATIONS)}; got {quantization!r}.")
    adapter = _check_folder(folder)
    quantizer = None
    if QUANTIZATIONS[quantization][1] is not None:
        quantizer = quantizer_python()
        if quantizer is None:
            raise ExportError(
                f"--gguf {quantization} needs llama.cpp's quantizer (the llama_cpp module), which `make serve-env` "
                "builds into .venv-serve (about 4 minutes); or export --gguf q8_0 or f16, which need no build."
            )
    layout = _layout(folder, prompt_format)
    architecture = _architecture(folder)
    known = known_architectures(fetch_converter(say))
    if architecture not in known:
        raise ExportError(
            f"llama.cpp's converter (llama-cpp-python's sdist) does not know the architecture {architecture} "
            f"of {folder}: it cannot be exported to GGUF."
        )
    output = Path(output_dir).expanduser() if output_dir else folder / GGUF_FOLDER
    return ExportPlan(folder, quantization, output, layout, architecture, adapter, quantizer)


# ---------------------------------------------------------------------------------------------- staging
def _stage_links(folder: Path, staging: Path) -> None:
    """Links the folder's files into ``staging`` (the weights are not copied; nothing in ``folder`` changes)."""
    for item in folder.iterdir():
        if item.is_file() and item.name not in _CHAT_TEMPLATE_FILES:
            os.symlink(item.resolve(), staging / item.name)


def _stage_merged(plan: ExportPlan, staging: Path, say: Callable[[str], None]) -> None:
    """Merges the adapter into its base on CPU (transformers + PEFT) and saves the 16-bit model in ``staging``."""
    from llama_unsloth.models import load_model
    from llama_unsloth.training import save_merged

    say(f"Merging the LoRA adapter {plan.folder} into its base model (transformers, 16-bit) ...")
    model, tokenizer, backend = load_model(
        str(plan.folder), backend="transformers", load_in_4bit=False, dtype="float32"
    )
    save_merged(model, tokenizer, plan.prompt_format, staging, "merged_16bit", backend)
    for name in _CHAT_TEMPLATE_FILES:
        (staging / name).unlink(missing_ok=True)


def _write_layout(staging: Path, chat_template: Optional[str], end: str) -> None:
    """The layout's chat template and end token in the staged tokenizer_config.json, where the converter reads them.

    The converter prefers tokenizer_config.json's ``chat_template`` over ``chat_template.jinja``, so a folder
    saved before its template was the layout's still exports the layout.
    """
    path = staging / "tokenizer_config.json"
    config: Dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    path.unlink(missing_ok=True)  # a link to the user's own file: write a new file, never through the link
    if chat_template is not None:
        config["chat_template"] = chat_template
    config["eos_token"] = end
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- checking
def read_gguf_metadata(path: str | Path) -> Dict[str, Any]:
    """A GGUF's metadata as plain values (the token list and merges left out), read with the ``gguf`` package."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    values: Dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key in _LARGE_FIELDS:
            continue
        try:
            values[key] = field.contents()
        except Exception:  # noqa: BLE001 - a field this gguf version cannot decode is not one we check
            continue
    return values


def _verify(path: Path, chat_template: Optional[str], eos_id: int) -> Dict[str, Any]:
    """The GGUF's metadata, checked: the converter wrote our template and EOS (a silent change would be a bug)."""
    metadata = read_gguf_metadata(path)
    wrong = []
    if metadata.get("tokenizer.chat_template") != chat_template:
        wrong.append("tokenizer.chat_template is not the layout's")
    if metadata.get("tokenizer.ggml.eos_token_id") != eos_id:
        wrong.append(f"tokenizer.ggml.eos_token_id is {metadata.get('tokenizer.ggml.eos_token_id')}, not {eos_id}")
    if not metadata.get("general.architecture"):
        wrong.append("general.architecture is missing")
    if wrong:
        raise RuntimeError(f"{path} was written, but its metadata is wrong: {'; '.join(wrong)}.")
    return metadata


# ---------------------------------------------------------------------------------------------- export
def run_export(plan: ExportPlan, say: Callable[[str], None] = print) -> ExportResult:
    """Does the export :func:`plan_export` checked: stage (merge), write the layout, convert, quantize, verify."""
    from transformers import AutoTokenizer

    root = fetch_converter(say)
    tokenizer = AutoTokenizer.from_pretrained(str(plan.folder))
    chat_template = layout_chat_template(plan.prompt_format, tokenizer)
    end = end_token(plan.prompt_format, tokenizer)
    eos_id = int(tokenizer.convert_tokens_to_ids(end))
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    target = plan.output_dir / gguf_name(plan.quantization)
    staging = Path(tempfile.mkdtemp(prefix=".staging.", dir=plan.output_dir))
    try:
        if plan.adapter:
            _stage_merged(plan, staging, say)
        else:
            _stage_links(plan.folder, staging)
        _write_layout(staging, chat_template, end)
        outtype, ftype = QUANTIZATIONS[plan.quantization]
        converted = staging / f"converted-{outtype}.gguf"
        say(f"Converting {plan.folder} ({plan.architecture}) with llama.cpp's converter (--outtype {outtype}) ...")
        run_converter(root, staging, outtype, converted, force_bpe=is_byte_level_bpe(staging))
        if ftype is not None and plan.quantizer is not None:
            say(f"Quantizing to {plan.quantization} with llama.cpp's quantizer ...")
            quantized = staging / f"quantized-{plan.quantization}.gguf"
            quantize(plan.quantizer, converted, quantized, ftype)
            converted = quantized
        metadata = _verify(converted, chat_template, eos_id)
        os.replace(converted, target)  # a failed run leaves no half-written model-<quant>.gguf behind
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    modelfile = write_modelfile(plan.output_dir, target.name, plan.prompt_format, tokenizer)
    say(f"Wrote {target} ({target.stat().st_size / 2**20:.1f} MiB) and {modelfile}")
    return ExportResult(target, modelfile, str(metadata["general.architecture"]), chat_template, eos_id)


def export_gguf(
    model_dir: str | Path,
    quantization: str,
    output_dir: Optional[str | Path] = None,
    prompt_format: Optional[str | PromptFormat] = None,
    say: Callable[[str], None] = print,
) -> ExportResult:
    """Exports a model or adapter folder to ``<output_dir>/model-<quantization>.gguf`` and a ``Modelfile``.

    Args:
        model_dir: A full model folder (``merged/``) or a LoRA adapter folder (merged into its base first).
        quantization: ``f16``, ``q8_0`` or ``q4_k_m`` (q4_k_m needs ``llama_cpp``: ``make serve-env``).
        output_dir: Where to write; default ``<model_dir>/gguf``.
        prompt_format: The layout; default the folder's ``prompt_format.json`` (``chat`` without one).
        say: Where progress lines go.

    Raises:
        ExportError: Bad input, said before any work (see :func:`plan_export`).
    """
    return run_export(plan_export(model_dir, quantization, output_dir, prompt_format, say), say)
