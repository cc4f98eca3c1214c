"""Model folders: what a path holds (a full model, a LoRA adapter, a pre-quantized checkpoint) and its ``config.json``.

Everything here reads small JSON files only; nothing imports torch or transformers, so a command can
refuse a wrong path (or plan its memory) before anything heavy loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

from llama_unsloth.errors import ModelLoadError

CONFIG_FILE = "config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
_MODEL_FILES = (CONFIG_FILE, ADAPTER_CONFIG_FILE)


def check_model_path(model_name: str) -> None:
    """Gives a clear error for a local path that is missing or is not a model folder.

    Hub ids (``org/name``) that do not exist locally are left to the loader.

    Raises:
        ModelLoadError: The path is missing, or holds neither ``config.json`` nor ``adapter_config.json``.
    """
    path = Path(model_name).expanduser()
    looks_local = path.is_absolute() or model_name.startswith((".", "~")) or model_name.count("/") > 1
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            return
        if not path.is_dir() or not any((path / name).is_file() for name in _MODEL_FILES):
            raise ModelLoadError(
                f"{model_name} is not a model folder: it has no config.json (full model) or "
                "adapter_config.json (LoRA adapter). Point at the folder the finetune recipe wrote."
            )
    elif looks_local:
        raise ModelLoadError(f"Model folder {model_name} does not exist.")


def is_adapter_folder(model_name: Union[str, Path]) -> bool:
    """True for a folder that holds a LoRA adapter but no full model."""
    path = Path(model_name)
    return (path / ADAPTER_CONFIG_FILE).is_file() and not (path / CONFIG_FILE).is_file()


def folder_config(folder: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """The ``config.json`` of a local model folder as a dict, or ``None`` when the folder has none."""
    config = Path(folder) / CONFIG_FILE
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8"))


def is_prequantized(model_name: Union[str, Path]) -> bool:
    """True for a model folder whose config.json holds a quantization_config (a pre-quantized checkpoint)."""
    config = folder_config(model_name)
    return config is not None and "quantization_config" in config


def adapter_base(adapter: Any) -> Optional[str]:
    """The base model an adapter was trained on (PEFT's ``base_model_name_or_path``), or ``None``.

    Args:
        adapter: An adapter folder (read from its ``adapter_config.json``; ``None`` for a folder that is
            not an adapter folder), or a loaded PEFT model (its ``peft_config``, which PEFT read from
            that same file; the first adapter that names a base).
    """
    if isinstance(adapter, (str, Path)):
        if not is_adapter_folder(adapter):
            return None
        config = json.loads((Path(adapter) / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8"))
        base = config.get("base_model_name_or_path")
        return str(base) if base else None
    configs = getattr(adapter, "peft_config", None) or {}
    bases = (getattr(config, "base_model_name_or_path", None) for config in configs.values())
    return next((str(base) for base in bases if base), None)


def read_model_config(model_name: str) -> Optional[Dict[str, Any]]:
    """The ``config.json`` of a local model folder, of an adapter folder's base, or of a cached hub model.

    Returns ``None`` when it cannot be read without downloading (a memory estimate is then skipped).
    """
    path = Path(model_name).expanduser()
    if is_adapter_folder(path):
        base = adapter_base(str(path))
        return read_model_config(base) if base else None
    config = folder_config(path)
    if config is not None:
        return config
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model_name, CONFIG_FILE)
    except Exception:  # an invalid repo id, no hub library: no config
        return None
    if isinstance(cached, str):
        return json.loads(Path(cached).read_text(encoding="utf-8"))
    return None


__all__ = [
    "ADAPTER_CONFIG_FILE",
    "CONFIG_FILE",
    "adapter_base",
    "check_model_path",
    "folder_config",
    "is_adapter_folder",
    "is_prequantized",
    "read_model_config",
]
