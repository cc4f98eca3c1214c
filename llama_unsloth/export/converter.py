"""llama.cpp's own converter and quantizer, taken from the pinned llama-cpp-python sdist (never a network clone).

Unsloth's ``save_pretrained_gguf`` clones and builds llama.cpp from GitHub, which cannot work offline and
follows llama.cpp's head. Here the converter comes from the sdist of the llama-cpp-python release we serve
with (``make serve-env``): pip downloads it once (through the configured index and pip's cache), and only
``convert_hf_to_gguf.py``, the ``conversion/`` package it imports and ``gguf-py/`` are kept under
:func:`converter_dir`. The converter runs in a subprocess with our interpreter (it needs torch, numpy,
transformers, which we have), the vendored ``gguf-py`` first on the path so it matches the converter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, List, Optional, Set

from llama_unsloth.defaults import cache_dir
from llama_unsloth.errors import ExportError

LLAMA_CPP_PYTHON = "llama-cpp-python"
LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # the release requirements/ pins for serving: the converter must match it
_SDIST_ROOT = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
_KEPT = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
_DONE_FILE = ".complete"

# Runs the converter with one change where ``force_bpe`` is set: llama.cpp's Llama converter tries a
# SentencePiece vocabulary first, then ``LlamaHfVocab`` for any BPE tokenizer.json with byte_fallback, and only
# then GPT-2's BPE. SmolLM2's converted tokenizer.json is byte-level BPE with byte_fallback set, so the second
# route takes it, and the GGUF it writes crashes llama.cpp's server on the first request (std::out_of_range,
# seen 2026-12-04). A byte-level tokenizer has a token for every byte, so GPT-2's vocabulary is the right one:
# both earlier routes are made to report "not this kind", and the rest of set_vocab (special tokens, the
# add-BOS rule for 49152-token vocabularies) runs as written.
_RUNNER = """
import runpy, sys
root, force_bpe, *args = sys.argv[1:]
sys.path[:0] = [root + "/gguf-py", root]
if force_bpe == "1":
    import conversion.llama as llama_conversion

    def _not_this_vocab(self, *unused, **unused_too):
        raise FileNotFoundError("byte-level BPE tokenizer: GPT-2 vocabulary (llama-unsloth)")

    llama_conversion.LlamaModel._set_vocab_sentencepiece = _not_this_vocab
    llama_conversion.LlamaModel._set_vocab_llama_hf = _not_this_vocab
sys.argv = [root + "/convert_hf_to_gguf.py", *args]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

_QUANTIZE = """
import ctypes, sys
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, sys.argv[3])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


def converter_dir() -> Path:
    """Where the converter is kept: ``<cache>/llama-cpp-python-<version>/llama.cpp``."""
    return cache_dir() / f"{LLAMA_CPP_PYTHON}-{LLAMA_CPP_PYTHON_VERSION}" / "llama.cpp"


def _kept(name: str) -> Optional[str]:
    """The path under llama.cpp/ of an sdist member we keep, else None (the rest of the 77 MB is C++)."""
    if not name.startswith(_SDIST_ROOT):
        return None
    inner = name[len(_SDIST_ROOT) :]
    return inner if inner and any(inner == k or inner.startswith(k) for k in _KEPT) else None


def _extract(sdist: Path, target: Path) -> None:
    """Extracts the converter's files from ``sdist`` into ``target`` (complete, or not at all)."""
    staging = Path(tempfile.mkdtemp(prefix=".extract.", dir=target.parent))
    try:
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                inner = _kept(member.name)
                if inner is None or not member.isfile() or ".." in Path(inner).parts:
                    continue
                out = staging / inner
                out.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                if source is not None:
                    out.write_bytes(source.read())
        if not (staging / "convert_hf_to_gguf.py").is_file():
            raise ExportError(f"{sdist.name} holds no vendor/llama.cpp/convert_hf_to_gguf.py.")
        (staging / _DONE_FILE).write_text(LLAMA_CPP_PYTHON_VERSION + "\n", encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_converter(say: Callable[[str], None] = print) -> Path:
    """llama.cpp's converter folder, downloaded (through pip) and extracted on first use.

    Raises:
        ExportError: pip could not download the sdist (no network or index): the line says so.
    """
    target = converter_dir()
    if (target / _DONE_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    spec = f"{LLAMA_CPP_PYTHON}=={LLAMA_CPP_PYTHON_VERSION}"
    say(f"Fetching llama.cpp's converter: pip download {spec} (sdist, 77 MB, once) into {target.parent} ...")
    download = Path(tempfile.mkdtemp(prefix=".download.", dir=target.parent))
    try:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", spec]
        done = subprocess.run([*command, "-d", str(download)], capture_output=True, text=True)
        sdists = sorted(download.glob("*.tar.gz"))
        if done.returncode != 0 or not sdists:
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            raise ExportError(
                f"pip could not download {spec} (llama.cpp's converter comes from its sdist; is the package "
                f"index reachable?): {last}"
            )
        _extract(sdists[0], target)
    finally:
        shutil.rmtree(download, ignore_errors=True)
    say(f"llama.cpp's converter is in {target}")
    return target


def known_architectures(root: Path) -> Set[str]:
    """The transformers architectures llama.cpp's converter registers (``@ModelBase.register("...")``)."""
    names: Set[str] = set()
    files = [root / "convert_hf_to_gguf.py", *sorted((root / "conversion").glob("*.py"))]
    for file in files:
        if file.is_file():
            for block in re.findall(r"@ModelBase\.register\(([^)]*)\)", file.read_text(encoding="utf-8")):
                names.update(re.findall(r"[\"']([A-Za-z0-9_]+)[\"']", block))
    return names


def is_byte_level_bpe(folder: Path) -> bool:
    """True for a tokenizer.json whose pre-tokenizer is byte-level (GPT-2 style) and no SentencePiece model."""
    if (folder / "tokenizer.model").is_file() or not (folder / "tokenizer.json").is_file():
        return False
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    pre = tokenizer.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return (tokenizer.get("model") or {}).get("type") == "BPE" and any(
        (p or {}).get("type") == "ByteLevel" for p in parts
    )


def run_converter(root: Path, model_dir: Path, outtype: str, outfile: Path, force_bpe: bool) -> None:
    """Runs ``convert_hf_to_gguf.py model_dir --outtype outtype --outfile outfile`` in a subprocess.

    Raises:
        RuntimeError: The converter failed; the message ends with its last output line.
    """
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # the vendored gguf-py must win over the gguf installed in our venv
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root / "gguf-py"), str(root), env.get("PYTHONPATH")) if p)
    args = [str(model_dir), "--outtype", outtype, "--outfile", str(outfile)]
    command = [sys.executable, "-c", _RUNNER, str(root), "1" if force_bpe else "0", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not outfile.is_file():
        lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
        raise RuntimeError(f"llama.cpp's converter failed (exit {done.returncode}): {lines[-1]}")


def _serve_pythons() -> List[Path]:
    """Interpreters that may have llama_cpp: ``.venv-serve`` here and in the repository holding this package."""
    repo = Path(__file__).resolve().parents[2]
    return [folder / ".venv-serve" / "bin" / "python" for folder in dict.fromkeys([Path.cwd(), repo])]


def quantizer_python() -> Optional[str]:
    """A Python that imports ``llama_cpp`` (ours, else ``.venv-serve``'s), or None: q4_k_m needs one."""
    if importlib.util.find_spec("llama_cpp") is not None:
        return sys.executable
    for python in _serve_pythons():
        if python.is_file():
            probe = subprocess.run([str(python), "-c", "import llama_cpp"], capture_output=True)
            if probe.returncode == 0:
                return str(python)
    return None


def quantize(python: str, source: Path, target: Path, ftype: str) -> None:
    """llama.cpp's quantizer (``llama_cpp.llama_model_quantize``) from ``source`` to ``target``.

    Args:
        python: An interpreter that imports ``llama_cpp`` (:func:`quantizer_python`).
        source: The f16 GGUF.
        target: The quantized GGUF.
        ftype: ``llama_cpp``'s constant, e.g. ``LLAMA_FTYPE_MOSTLY_Q4_K_M``.

    Raises:
        RuntimeError: The quantizer failed.
    """
    done = subprocess.run([python, "-c", _QUANTIZE, str(source), str(target), ftype], capture_output=True, text=True)
    if done.returncode != 0 or not target.is_file():
        lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
        raise RuntimeError(f"llama.cpp's quantizer failed (exit {done.returncode}): {lines[-1]}")
