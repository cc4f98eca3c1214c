"""llama_unsloth.import_utils: optional dependencies checked in one place, with the install line to print."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def test_unsloth_is_never_imported_without_a_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from llama_unsloth import import_utils

    if torch.cuda.is_available():
        pytest.skip("CPU behaviour")
    monkeypatch.chdir(tmp_path)
    assert import_utils.import_unsloth_first(["--model", "m"]) is False
    assert import_utils.import_unsloth_first(["--backend", "transformers"]) is False
    assert "unsloth" not in sys.modules and not os.path.exists("unsloth_compiled_cache")


def test_the_public_api_leaves_transformers_trl_and_peft_unimported_for_unsloth_to_patch_first() -> None:
    """unsloth must be imported before transformers/trl/peft (it patches them, and swaps trl's SFTTrainer):
    importing our API imports none of them, so the Unsloth backend's ``from unsloth import ...`` comes first."""
    import subprocess

    code = (
        "import sys; import llama_unsloth, postprocessors; from llama_unsloth import UnslothLLM; "
        "from postprocessors import POVReranker; import recipes.options; "
        "print(sorted(m for m in ('transformers', 'trl', 'peft') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_missing_extras_name_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from llama_unsloth import import_utils

    monkeypatch.setattr(import_utils, "_installed", lambda module: False)
    with pytest.raises(ImportError) as cohere:
        import_utils.require_cohere("--embed-backend cohere")
    assert str(cohere.value) == '--embed-backend cohere need the cohere extras: pip install "llama-unsloth[cohere]"'
    with pytest.raises(ImportError) as openai:
        import_utils.require_openai()
    assert str(openai.value) == 'ServedLLM needs the openai package: pip install "llama-unsloth[served]"'
    assert import_utils.is_bitsandbytes_available() is False


def test_the_cohere_extras_installed_here_are_seen() -> None:
    from llama_unsloth import import_utils

    # make install puts the [cohere] and [served] extras in the venv: the checks must find them.
    assert import_utils.is_cohere_available() and import_utils.is_openai_available()
