"""Is a model name loadable here? Hub ids without a network are caught before anything loads.

Without this check a hub id that is not in the local Hugging Face cache, on a machine without
network (``HF_HUB_OFFLINE=1``, which the Makefile sets), ends in transformers' 60-line ``OSError``
chain after the rest of the command has already started.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_offline() -> bool:
    """Whether the environment tells Hugging Face libraries not to use the network."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


def looks_like_path(name: str) -> bool:
    """A local folder reference (existing, or written as a path) rather than a hub id."""
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def hub_model_cached(name: str) -> bool:
    """Whether the Hugging Face cache already holds hub id ``name`` (its ``config.json``)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # an invalid repo id, an unreadable cache: not cached
        return False
    return isinstance(found, str)


def offline_model_problem(name: Optional[str], what: str, flag: str, env_var: str) -> Optional[str]:
    """The one-line error for a hub id that cannot load offline, else ``None``.

    Args:
        name: Model name or folder (``None``: the bundled default, always local).
        what: ``Model`` / ``Embedding model``, for the message.
        flag: The option that names it (``--model``).
        env_var: The environment variable that can name it instead.
    """
    if not name or looks_like_path(name) or not hub_offline() or hub_model_cached(name):
        return None
    return (
        f"{what} {name!r} is not found locally and there is no network (HF_HUB_OFFLINE=1): pass a local folder "
        f"({flag} path/to/model) or set {env_var}=path/to/model."
    )


__all__ = ["OFFLINE_VARIABLES", "hub_model_cached", "hub_offline", "looks_like_path", "offline_model_problem"]
