"""llama_unsloth.training.export: the model card states what ran and how to serve it."""

from __future__ import annotations

from pathlib import Path


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


def test_a_base_loaded_from_a_4bit_checkpoint_is_seen_from_the_adapter_or_the_config(tmp_path: Path) -> None:
    """merged_16bit on Unsloth merges in memory when the base is on disk only in 4 bits."""
    import json
    from types import SimpleNamespace

    from llama_unsloth.training.export import _base_is_prequantized

    quantized = tmp_path / "bnb-4bit"
    quantized.mkdir()
    (quantized / "config.json").write_text(json.dumps({"quantization_config": {"load_in_4bit": True}}))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")

    def peft_model(base: object, loaded_from: object) -> object:
        return SimpleNamespace(
            peft_config={"default": SimpleNamespace(base_model_name_or_path=base)},
            config=SimpleNamespace(_name_or_path=loaded_from),
        )

    assert _base_is_prequantized(peft_model(str(quantized), None))
    assert _base_is_prequantized(peft_model(None, str(quantized)))
    assert not _base_is_prequantized(peft_model(str(plain), str(plain)))


def test_a_merged_4bit_that_fell_back_to_16bit_is_served_as_the_16bit_folder_it_is(tmp_path: Path) -> None:
    """Without CUDA/bitsandbytes merged_4bit writes 16-bit weights: the card must not say --quantization bitsandbytes."""
    import json

    from llama_unsloth import training as T
    from llama_unsloth.layouts import PromptFormat

    sixteen = tmp_path / "merged16"
    sixteen.mkdir()
    (sixteen / "config.json").write_text(json.dumps({"model_type": "llama"}))
    four = tmp_path / "merged4"
    four.mkdir()
    (four / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "bitsandbytes"}}))
    assert (T.merged_save_method(sixteen), T.merged_save_method(four)) == ("merged_16bit", "merged_4bit")

    card = T.model_card(
        base_model="m",
        data_file="d.json",
        data_sha256="0" * 64,
        records=1,
        prompt_format=PromptFormat.get("alpaca"),
        backend="transformers",
        settings={"save": "merged_4bit", "output_dir": "out/nemo"},
        summary=T.TrainingSummary(),
        merged=T.merged_save_method(sixteen),
    )
    assert "--quantization bitsandbytes" not in card
    assert "vllm serve out/nemo/merged --served-model-name nemo --port 8001" in card
    assert "`--save merged_4bit` was asked, but this machine had no CUDA GPU with bitsandbytes" in card
    assert "holds the merged model in **16-bit**" in card
