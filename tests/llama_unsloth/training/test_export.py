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


# ---------------------------------------------------------------------------------------------- the layout as chat template
# Small and fast, as tests/recipes/test_finetune.py runs the recipe: 2 steps on the tiny random Llama (CPU).
_FAST = [
    "--max-steps", "2", "--per-device-train-batch-size", "1", "--gradient-accumulation-steps", "1",
    "--warmup-steps", "1", "--max-seq-length", "128", "--backend", "transformers", "--no-load-in-4bit",
    "--use-gradient-checkpointing", "false",
]  # fmt: skip


class _NoWeights:
    """Stands in for a model whose weights are not the point: save_pretrained writes nothing."""

    def save_pretrained(self, folder: str) -> None:
        pass


def _rendered(folder: Path, messages: list) -> str:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )


def test_finetune_folders_carry_the_layout_as_chat_template_and_keep_the_base_one(
    tmp_path: Path, tiny_llama_path: Path
) -> None:
    import json

    from llama_unsloth import UnslothLLM
    from llama_unsloth.layouts import BASE_CHAT_TEMPLATE_FILE, CONTEXT_ROLE, PromptFormat, encode_prompt
    from recipes.finetune import main

    records = [{"instruction": f"Q{i}?", "context": f"C{i}.", "output": f"A{i}."} for i in range(4)]
    data = tmp_path / "train.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    out = tmp_path / "out"
    args = ["--model", str(tiny_llama_path), "--data", str(data), "--prompt-format", "alpaca-context"]
    assert main([*args, "--output-dir", str(out), "--save", "merged_16bit", *_FAST]) == 0

    base = (tiny_llama_path / "chat_template.jinja").read_text(encoding="utf-8")
    messages = [{"role": CONTEXT_ROLE, "content": "Bloc rules."}, {"role": "user", "content": "What limits trade?"}]
    for folder in (out, out / "merged"):
        fmt = PromptFormat.load(folder)
        assert fmt.name == "alpaca-context"
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        prompt = fmt.render_prompt("What limits trade?", "Bloc rules.", tokenizer=tokenizer)
        assert _rendered(folder, messages) == prompt  # SmolLM2's tokenizer adds no BOS: the very text
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        ids = list(ids["input_ids"]) if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert ids == encode_prompt(tokenizer, prompt)
        assert (folder / BASE_CHAT_TEMPLATE_FILE).read_text(encoding="utf-8") == base, folder
    # Reloading prompts exactly as before: the layout from prompt_format.json.
    llm = UnslothLLM.from_finetuned(
        out / "merged", backend="transformers", load_in_4bit=False, max_new_tokens=2, set_global_tokenizer=False
    )
    assert llm.complete("What limits trade?").raw["prompt"] == PromptFormat.get("alpaca-context").render_prompt(
        "What limits trade?", tokenizer=llm._tokenizer
    )
    # A later run into the same folder is still allowed to replace it (the base template file is one of ours).
    assert main([*args, "--output-dir", str(out), "--overwrite_output_dir", *_FAST]) == 0


def test_a_fine_tune_of_a_fine_tune_keeps_the_true_base_template_and_chat_layouts_are_untouched(
    tmp_path: Path, smollm2_path: Path
) -> None:
    from transformers import AutoTokenizer

    from llama_unsloth.layouts import BASE_CHAT_TEMPLATE_FILE, PromptFormat
    from llama_unsloth.training.export import save_adapter

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    base = tokenizer.chat_template
    first = save_adapter(_NoWeights(), tokenizer, PromptFormat.get("alpaca"), tmp_path / "first")
    again = AutoTokenizer.from_pretrained(first)
    assert again.chat_template != base
    second = save_adapter(_NoWeights(), again, PromptFormat.get("reasoning"), tmp_path / "second")
    assert (second / BASE_CHAT_TEMPLATE_FILE).read_text(encoding="utf-8") == base
    assert "<|reasoning|>" in _rendered(second, [{"role": "user", "content": "Q?"}])

    chat = save_adapter(_NoWeights(), tokenizer, PromptFormat.get("chat"), tmp_path / "chat")
    assert (chat / "chat_template.jinja").read_text(encoding="utf-8") == base
    assert not (chat / BASE_CHAT_TEMPLATE_FILE).exists()
    fmt = PromptFormat.load(chat)
    again = AutoTokenizer.from_pretrained(chat)
    assert fmt.render_prompt("Q?", tokenizer=again) == fmt.render_prompt("Q?", tokenizer=tokenizer)
