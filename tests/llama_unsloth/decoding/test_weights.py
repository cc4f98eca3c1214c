"""The fast path's weights: plain transformers classes in the default dtype, an adapter merged into its base."""

from __future__ import annotations

from pathlib import Path

from llama_unsloth.decoding.pristine import foreign_forwards
from llama_unsloth.decoding.weights import load_fast_model, quantize_weights


def test_a_merged_model_loads_in_eval_mode_in_the_default_dtype(tiny_llama_path: Path) -> None:
    import torch

    from llama_unsloth.models import auto_dtype

    model, tokenizer = load_fast_model(str(tiny_llama_path))
    assert not model.training and foreign_forwards(model) == [] and tokenizer is not None
    assert next(model.parameters()).dtype == auto_dtype()
    assert quantize_weights(model, None) is model and quantize_weights(model, "bf16") is model  # no torchao
    model, _ = load_fast_model(str(tiny_llama_path), dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_an_adapter_folder_is_merged_into_its_base(tiny_llama_path: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama_path))
    # Random (not zero) LoRA weights, so that the merged model differs from its base.
    adapted = get_peft_model(base, LoraConfig(target_modules=["q_proj"], init_lora_weights=False)).eval()
    adapted.save_pretrained(tmp_path / "adapter")
    AutoTokenizer.from_pretrained(str(tiny_llama_path)).save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        expected = adapted(input_ids=ids).logits
    model, _ = load_fast_model(str(tmp_path / "adapter"), dtype=torch.float32)
    assert foreign_forwards(model) == [] and not any("lora" in name for name, _ in model.named_parameters())
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)
