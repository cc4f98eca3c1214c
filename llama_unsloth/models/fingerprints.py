"""What a model folder is, by content: a fingerprint of the files it loads from, wherever the folder lies.

An index records its embedding model this way and a batch run its LLM, so the same model moved (a re-created
venv, a re-clone, another machine) is recognised and a changed one is not taken for it. Each file is hashed once:
the hashes are cached by path, modification time and size, in memory and in the user cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

FINGERPRINT_CACHE_FILE = "file-hashes.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_TOKENIZER_SUFFIXES = (".txt", ".model")  # vocab.txt, merges.txt; sentencepiece models
_SKIPPED_FOLDERS = ("onnx", "openvino")  # other runtimes' copies of the weights: not what is loaded here
_file_hashes: Dict[Tuple[str, int, int], str] = {}


def model_files(folder: Path, subfolders: bool = True) -> List[Path]:
    """The files a model loads from: configs, tokenizer and weights, in the folder (and its module folders).

    With ``subfolders`` the module folders count too: an embedding model's (``1_Pooling``) are part of it, an LLM
    folder's are not (``merged/``, ``checkpoint-*`` beside an adapter). Weights are a folder's ``.safetensors``
    files, or (only when it has none) its ``.bin``/``.pt``/``.pth``: a hub snapshot that also holds other formats
    and a copy holding only what loads get the same fingerprint. READMEs, licences, hidden files and ONNX/OpenVINO exports are left out. Empty when the
    folder holds no weights (it is no model).
    """
    chosen: List[Path] = []
    weights_found = False
    inside = sorted(p for p in folder.rglob("*") if p.is_dir()) if subfolders else []
    for here in [folder, *inside]:
        parts = here.relative_to(folder).parts
        if any(x.startswith(".") or x in _SKIPPED_FOLDERS for x in parts):
            continue
        files = [p for p in here.iterdir() if p.is_file() and not p.name.startswith(".")]
        weights = [p for p in files if p.suffix == ".safetensors"] or [
            p for p in files if p.suffix in _WEIGHT_SUFFIXES
        ]
        weights_found |= bool(weights)
        chosen += weights + [p for p in files if p.suffix == ".json" or p.suffix in _TOKENIZER_SUFFIXES]
    return sorted(chosen, key=lambda p: p.relative_to(folder).as_posix()) if weights_found else []


def folder_fingerprint(folder: Path, subfolders: bool = True) -> Optional[str]:
    """``sha256:<hex>`` of a model folder's :func:`model_files` (names and contents); None when it holds none.

    Each file's hash is cached by path, modification time and size, in memory and in the user cache
    (``file-hashes.json``), so a model is read once, not on every command.
    """
    files = model_files(folder, subfolders)
    if not files:
        return None
    disk = _read_hash_cache()
    total, changed = hashlib.sha256(), False
    for file in files:
        digest, hashed = _file_hash(file, disk)
        changed |= hashed
        total.update(f"{file.relative_to(folder).as_posix()}\t{digest}\n".encode())
    if changed:
        _write_hash_cache(disk)
    return "sha256:" + total.hexdigest()


def _file_hash(file: Path, disk: Dict[str, List[Any]]) -> Tuple[str, bool]:
    """``(sha256 of the file, whether it was read now)``, from the caches when path, mtime and size are unchanged."""
    stat = file.stat()  # through symlinks: a hub snapshot links to its blobs
    key = (str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    hashed = False
    if key not in _file_hashes:
        cached = disk.get(key[0])
        if isinstance(cached, list) and len(cached) == 3 and cached[:2] == [key[1], key[2]]:
            _file_hashes[key] = str(cached[2])
        else:
            _file_hashes[key], hashed = _sha256_of(file), True
    disk[key[0]] = [key[1], key[2], _file_hashes[key]]
    return _file_hashes[key], hashed


def _sha256_of(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_cache_path() -> Path:
    from llama_unsloth.defaults import cache_dir

    return cache_dir() / FINGERPRINT_CACHE_FILE


def _read_hash_cache() -> Dict[str, List[Any]]:
    try:
        data = json.loads(_hash_cache_path().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # no cache yet, or a broken one: hash again
        return {}


def _write_hash_cache(disk: Dict[str, List[Any]]) -> None:
    path = _hash_cache_path()
    disk = {name: entry for name, entry in disk.items() if os.path.exists(name)}  # moved or deleted models go
    try:  # atomic: two commands hashing at once leave one whole file
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=".file-hashes-", dir=path.parent)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(disk, out)
        os.replace(tmp, path)
    except OSError:  # a read-only cache costs a re-hash next time, nothing else
        pass


__all__ = ["FINGERPRINT_CACHE_FILE", "folder_fingerprint", "model_files"]
