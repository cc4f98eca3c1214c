"""llama_unsloth.models.loading: which backend and which LLM a command gets, before anything heavy loads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def test_unsloth_backend_without_a_gpu_says_what_to_do_and_never_imports_unsloth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    import torch

    from llama_unsloth.errors import ModelLoadError
    from llama_unsloth.import_utils import UNSLOTH_INSTALL_HINT
    from llama_unsloth.models import resolve_backend

    if torch.cuda.is_available():
        pytest.skip("CPU behaviour")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as err:
        resolve_backend("unsloth")
    assert UNSLOTH_INSTALL_HINT in str(err.value) and 'backend="transformers"' in str(err.value)
    assert resolve_backend("auto") == "transformers"
    # `import unsloth` without a GPU raises NotImplementedError and leaves this folder behind: it was never tried.
    assert "unsloth" not in sys.modules and not os.path.exists("unsloth_compiled_cache")
