"""llama_unsloth.training.export: the model card states what ran and how to serve it."""

from __future__ import annotations


def test_model_card_says_how_to_serve_a_4bit_merge_with_vllm() -> None:
    from llama_unsloth import training as T
    from llama_unsloth.layouts import PromptFormat

    card = T.model_card(
        base_model="m",
        data_file="d.json",
        data_sha256="0" * 64,
        records=1,
        prompt_format=PromptFormat.get("alpaca"),
        backend="unsloth",
        settings={"save": "merged_4bit", "output_dir": "out/nemo"},
        summary=T.TrainingSummary(),
    )
    assert "vllm serve out/nemo/merged --quantization bitsandbytes --served-model-name nemo --port 8001" in card
    lora = T.model_card(
        base_model="m",
        data_file="d.json",
        data_sha256="0" * 64,
        records=1,
        prompt_format=PromptFormat.get("alpaca"),
        backend="unsloth",
        settings={"save": "lora", "output_dir": "out/nemo"},
        summary=T.TrainingSummary(),
    )
    assert "vllm serve out" not in lora and "--save merged_16bit" in lora
