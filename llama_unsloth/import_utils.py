"""Optional dependencies: whether each one is usable here, and the install line to print when it is not.

Modelled on PEFT's ``import_utils.py``: one ``is_*_available()`` per optional package, checked without
importing heavy modules at import time, and one ``require_*()`` that raises an ``ImportError`` naming
the extra to install. Everything else in the package asks here instead of trying imports itself.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from functools import lru_cache
from typing import Optional, Sequence

logger = logging.getLogger(__name__)

# pip extras of llama-unsloth (pyproject.toml [project.optional-dependencies]).
UNSLOTH_INSTALL_HINT = 'pip install "llama-unsloth[unsloth]"'
COHERE_INSTALL_HINT = 'pip install "llama-unsloth[cohere]"'
SERVED_INSTALL_HINT = 'pip install "llama-unsloth[served]"'
# A dependency of llama-unsloth itself (pure Python): missing only after an install with --no-deps.
LMFORMATENFORCER_INSTALL_HINT = 'pip install "lm-format-enforcer>=0.11.3,<0.12"'


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that fails to import, or a broken __spec__
        return False


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def is_bitsandbytes_available() -> bool:
    """True when bitsandbytes can run here: it is installed and there is a CUDA device (its kernels need one)."""
    return cuda_available() and _installed("bitsandbytes")


@lru_cache(maxsize=1)
def is_unsloth_available() -> bool:
    """True when unsloth imports here; importing it is how Unsloth patches transformers, peft and trl.

    CUDA is checked first: without a GPU ``import unsloth`` raises ``NotImplementedError`` and leaves
    an ``unsloth_compiled_cache/`` folder behind. Call this before transformers, peft or trl are
    imported in a process that trains or generates with Unsloth ("import unsloth first", its docs say).
    """
    if not cuda_available() or not _installed("unsloth"):
        return False
    try:
        import unsloth  # noqa: F401
    except Exception as err:  # NotImplementedError, ImportError, CUDA driver errors
        logger.info("unsloth is not usable here (%s: %s)", type(err).__name__, err)
        return False
    return True


def import_unsloth_first(argv: Optional[Sequence[str]] = None) -> bool:
    """Imports unsloth (when it can run here) before a recipe imports transformers, peft or trl.

    Unsloth patches those libraries as it is imported and warns that, imported later, "your code may
    run slower". Recipes call this first thing; ``--backend transformers`` on the command line skips it.

    Returns:
        True when unsloth is imported.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        if (
            arg == "--backend" and i + 1 < len(args) and args[i + 1] == "transformers"
        ) or arg == "--backend=transformers":
            return False
    return is_unsloth_available()


def is_cohere_available() -> bool:
    """True when the Cohere SDK and LlamaIndex's Cohere embedding integration are installed."""
    return _installed("cohere") and _installed("llama_index.embeddings.cohere")


def is_openai_available() -> bool:
    """True when the openai SDK (used by ``ServedLLM``) is installed."""
    return _installed("openai")


def is_lmformatenforcer_available() -> bool:
    """True when lm-format-enforcer (structured outputs in-process: JSON-schema constrained generation) is installed."""
    return _installed("lmformatenforcer")


def require_cohere(what: str = "Cohere embeddings") -> None:
    """Raises ``ImportError`` with the install line when the Cohere extras are missing."""
    if not is_cohere_available():
        raise ImportError(f"{what} need the cohere extras: {COHERE_INSTALL_HINT}")


def require_openai(what: str = "ServedLLM") -> None:
    """Raises ``ImportError`` with the install line when the openai SDK is missing."""
    if not is_openai_available():
        raise ImportError(f"{what} needs the openai package: {SERVED_INSTALL_HINT}")


def require_lmformatenforcer(what: str = "Structured outputs (structured_predict, as_structured_llm)") -> None:
    """Raises ``ImportError`` with the install line when lm-format-enforcer is missing."""
    if not is_lmformatenforcer_available():
        raise ImportError(f"{what} in-process need lm-format-enforcer: {LMFORMATENFORCER_INSTALL_HINT}")


# trl 1.15's SFTTrainer computes every loss with a Triton kernel (trl.kernels.ChunkedLogProbFunction), which has no
# CPU path: the CPU install pins trl 1.14.2 (requirements/gpu-tested.txt says why); a plain `pip install` on a CPU
# machine may still bring 1.15.
CPU_TRL = "1.14.2"


def require_trainable_trl() -> None:
    """Raises ``ImportError`` with the install line when the installed trl cannot train on this machine.

    Checked by the finetune recipe before a model loads: without it, trl 1.15 fails at the first step on a CPU
    machine with ``'NoneType' object has no attribute 'apply'``.
    """
    import importlib.metadata as metadata

    try:
        version = metadata.version("trl")
    except metadata.PackageNotFoundError:
        return
    major_minor = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if major_minor >= (1, 15) and not (_installed("triton") and cuda_available()):
        raise ImportError(
            f"trl {version} fine-tunes only on a CUDA GPU (its SFTTrainer loss is a Triton kernel); on this machine "
            f"install trl {CPU_TRL}: pip install 'trl=={CPU_TRL}' (make install pins it)."
        )


__all__ = [
    "CPU_TRL",
    "COHERE_INSTALL_HINT",
    "LMFORMATENFORCER_INSTALL_HINT",
    "SERVED_INSTALL_HINT",
    "UNSLOTH_INSTALL_HINT",
    "cuda_available",
    "import_unsloth_first",
    "is_bitsandbytes_available",
    "is_cohere_available",
    "is_lmformatenforcer_available",
    "is_openai_available",
    "is_unsloth_available",
    "require_trainable_trl",
    "require_cohere",
    "require_lmformatenforcer",
    "require_openai",
]
