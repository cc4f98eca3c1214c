"""GGUF export of the tiny Llama (SmolLM2's tokenizer) with llama.cpp's own converter: metadata, merge, vocabulary."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from llama_unsloth.errors import ExportError
from llama_unsloth.layouts import PromptFormat

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def converter() -> Path:
    """llama.cpp's converter from the pinned sdist (pip's cache makes it quick); skipped without the index."""
    from llama_unsloth.export import fetch_converter

    try:
        return fetch_converter(lambda line: None)
    except ExportError as err:  # no network or package index here; CI reaches it
        pytest.skip(f"llama-cpp-python's sdist cannot be downloaded: {err}")


@pytest.fixture(scope="module")
def alpaca_folder(tiny_llama_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as a fine-tuned folder in the alpaca-context layout (its own copy: exports write into it)."""
    folder = tmp_path_factory.mktemp("alpaca") / "merged"
    shutil.copytree(tiny_llama_path, folder)
    PromptFormat.get("alpaca-context").save(folder)
    return folder


def _tensor(path: Path, name: str) -> np.ndarray:
    from gguf import GGUFReader

    tensor = next(t for t in GGUFReader(str(path)).tensors if t.name == name)
    return np.array(tensor.data, dtype=np.float32)


def test_f16_export_carries_the_layout(converter: Path, alpaca_folder: Path) -> None:
    from transformers import AutoTokenizer

    from llama_unsloth.export import export_gguf, read_gguf_metadata

    lines: list = []
    result = export_gguf(alpaca_folder, "f16", say=lines.append)
    assert result.gguf == alpaca_folder / "gguf" / "model-f16.gguf" and result.gguf.is_file()
    assert (alpaca_folder / "gguf" / "Modelfile").read_text("utf-8").startswith("FROM ./model-f16.gguf\n")
    assert any(line.startswith("Converting") for line in lines)
    metadata = read_gguf_metadata(result.gguf)
    tokenizer = AutoTokenizer.from_pretrained(alpaca_folder)
    assert metadata["general.architecture"] == "llama"
    assert metadata["tokenizer.chat_template"] == PromptFormat.load(alpaca_folder).to_chat_template(tokenizer)
    assert metadata["tokenizer.ggml.eos_token_id"] == 2 == tokenizer.convert_tokens_to_ids("<|im_end|>")
    # SmolLM2's byte-level BPE must take llama.cpp's GPT-2 path (its SentencePiece path writes a GGUF that
    # crashes llama.cpp's server), with the pre-tokenizer llama.cpp knows for it.
    assert metadata["tokenizer.ggml.model"] == "gpt2"
    assert metadata["tokenizer.ggml.pre"] == "smollm"
    assert metadata["general.file_type"] == 1  # MOSTLY_F16
    assert not any(p.name.startswith(".staging") for p in result.gguf.parent.iterdir())
    assert not (alpaca_folder / "tokenizer_config.json").is_symlink()  # the user's folder is untouched


def test_adapter_is_merged_first(converter: Path, tiny_llama_path: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llama_unsloth.export import export_gguf
    from llama_unsloth.training import save_adapter

    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama_path),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 1.0)  # LoRA's B starts at zero: a no-op merge would go unnoticed
    adapter = save_adapter(
        model, AutoTokenizer.from_pretrained(tiny_llama_path), PromptFormat.get("alpaca"), tmp_path / "adapter"
    )
    merged = export_gguf(adapter, "f16", output_dir=tmp_path / "out", say=lambda line: None).gguf
    base = export_gguf(tiny_llama_path, "f16", output_dir=tmp_path / "base", say=lambda line: None).gguf
    q_delta = np.abs(_tensor(merged, "blk.0.attn_q.weight") - _tensor(base, "blk.0.attn_q.weight")).mean()
    ffn_delta = np.abs(_tensor(merged, "blk.0.ffn_down.weight") - _tensor(base, "blk.0.ffn_down.weight")).mean()
    assert q_delta > 0.1 > ffn_delta  # q_proj carries the adapter; the rest differs by 16-bit rounding at most
    assert (tmp_path / "out" / "Modelfile").is_file() and not (adapter / "gguf").exists()


def test_unknown_architecture_is_refused_before_work(converter: Path, tiny_llama_path: Path, tmp_path: Path) -> None:
    import json

    from llama_unsloth.export import plan_export

    folder = tmp_path / "odd"
    shutil.copytree(tiny_llama_path, folder)
    config = json.loads((folder / "config.json").read_text("utf-8"))
    config["architectures"] = ["NoSuchModelForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config), "utf-8")
    with pytest.raises(ExportError, match="does not know the architecture NoSuchModelForCausalLM"):
        plan_export(folder, "f16", say=lambda line: None)
    assert not (folder / "gguf").exists()


def test_known_architectures_include_our_families(converter: Path) -> None:
    from llama_unsloth.export.converter import known_architectures

    known = known_architectures(converter)
    for name in ("LlamaForCausalLM", "MistralForCausalLM", "Gemma2ForCausalLM", "Phi3ForCausalLM", "Qwen2ForCausalLM"):
        assert name in known


def test_q4_k_m_with_llama_cpp(converter: Path, alpaca_folder: Path, tmp_path: Path) -> None:
    from llama_unsloth.export import export_gguf, read_gguf_metadata
    from llama_unsloth.export.converter import quantizer_python

    if quantizer_python() is None:
        pytest.skip("llama_cpp is not importable here or in .venv-serve (make serve-env builds it)")
    result = export_gguf(alpaca_folder, "q4_k_m", output_dir=tmp_path, say=lambda line: None)
    metadata = read_gguf_metadata(result.gguf)
    assert metadata["general.file_type"] == 15  # MOSTLY_Q4_K_M
    assert metadata["tokenizer.ggml.eos_token_id"] == 2 and metadata["tokenizer.chat_template"] == result.chat_template
