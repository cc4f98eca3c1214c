"""llama_unsloth.models.loading: which backend and which LLM a command gets, before anything heavy loads."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest


def test_a_finetuned_folder_loads_with_its_saved_layout_in_full_precision_on_cpu(
    tiny_llama_path: Path, tmp_path: Path
) -> None:
    import torch

    from llama_unsloth.layouts import PromptFormat
    from llama_unsloth.llms.factory import load_llm

    if torch.cuda.is_available():
        pytest.skip("CPU policy")
    folder = tmp_path / "finetuned"
    shutil.copytree(tiny_llama_path, folder)
    PromptFormat.get("instruction-context").save(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # load_in_4bit=None: no "4-bit needs CUDA" warning on CPU
        llm = load_llm(model_dir=str(folder), max_new_tokens=4, set_global_tokenizer=False)
    assert llm.format.name == "instruction-context" and llm.backend_name == "transformers"
    assert not getattr(llm.model, "is_loaded_in_4bit", False)
    prompt = llm.complete("Which bloc?").raw["prompt"]
    assert "Which bloc?" in prompt and prompt == llm.format.render_prompt("Which bloc?")
    # A name, not a folder: the default layout of a plain model (its chat template).
    assert load_llm(str(tiny_llama_path), max_new_tokens=4, set_global_tokenizer=False).format.is_chat


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
