"""llama_unsloth.llms.factory: which LLM a command gets (a fine-tuned folder or a name; in-process or served)."""

from __future__ import annotations

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


def test_a_server_url_gives_a_served_llm_in_the_folders_layout_without_loading_weights(
    tiny_llama_path: Path, tmp_path: Path
) -> None:
    from llama_unsloth.layouts import PromptFormat
    from llama_unsloth.llms import ServedLLM
    from llama_unsloth.llms.factory import load_llm

    folder = tmp_path / "merged"
    shutil.copytree(tiny_llama_path, folder)
    (folder / "model.safetensors").unlink()  # the weights stay on the server
    PromptFormat.get("alpaca-context").save(folder)
    llm = load_llm(model_dir=str(folder), llm_url="http://127.0.0.1:9/v1", served_model="qa", max_new_tokens=4)
    assert isinstance(llm, ServedLLM) and llm.served_model == "qa" and llm.format.name == "alpaca-context"
    # --fast-decode with a server is a contradiction, not something to ignore.
    with pytest.raises(ValueError, match="ServedLLM does not take fast_decode"):
        load_llm(model_dir=str(folder), llm_url="http://127.0.0.1:9/v1", fast_decode=True)
