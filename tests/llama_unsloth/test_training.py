"""Unit tests of llama_unsloth.training pieces that need no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_unsloth.prompts import PromptFormat, PromptFormatError
from llama_unsloth.training import (
    DatasetError,
    TrainingHistory,
    check_records,
    file_sha256,
    plot_loss,
    read_records,
    resolve_optimizer,
    resolve_precision,
)


def test_read_records_accepts_json_arrays_and_json_lines(tmp_path: Path) -> None:
    records = [{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": "d", "output": "e"}]
    array = tmp_path / "a.json"
    array.write_text(json.dumps(records, indent=2))
    lines = tmp_path / "a.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    assert read_records(array) == records == read_records(lines)
    assert len(file_sha256(array)) == 64 and file_sha256(array) != file_sha256(lines)


def test_read_records_rejects_a_wrapper_object_and_a_missing_file(tmp_path: Path) -> None:
    wrapper = tmp_path / "w.json"
    wrapper.write_text(json.dumps({"data": [{"instruction": "a"}]}))
    with pytest.raises(DatasetError, match="one JSON object, not a list of records"):
        read_records(wrapper)
    with pytest.raises(DatasetError, match="does not exist"):
        read_records(tmp_path / "nope.json")


def test_check_records_names_file_record_and_field() -> None:
    fmt = PromptFormat.get("instruction-context")
    good = {"instruction": "q", "context": "c", "answer": "a"}
    check_records([good, good], fmt, "f.json")
    with pytest.raises(PromptFormatError, match=r"f\.json, record 2: missing field 'context'"):
        check_records([good, {"instruction": "q", "answer": "a"}], fmt, "f.json")
    with pytest.raises(PromptFormatError, match=r"record 1: expected a JSON object"):
        check_records(["just text"], fmt, "f.json")


def test_cpu_falls_back_from_8bit_adam_and_mixed_precision() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU behaviour")
    optim, note = resolve_optimizer("adamw_8bit")
    assert optim == "adamw_torch" and "CUDA" in note
    assert resolve_optimizer("adamw_torch") == ("adamw_torch", None)
    assert resolve_precision("auto") == "fp32" and resolve_precision("bf16") == "fp32"
    with pytest.raises(ValueError):
        resolve_precision("fp8")


def test_history_records_losses_and_plot_needs_steps(tmp_path: Path) -> None:
    history = TrainingHistory()
    assert plot_loss(tmp_path / "none.png", history) is None
    history.step_began()
    history.step_ended(1)
    history.logged(1, {"loss": 2.5, "learning_rate": 1e-4, "epoch": 0.1, "grad_norm": 0.7})
    history.logged(1, {"train_loss": 2.5, "train_runtime": 1.0})
    assert history.final_loss == 2.5 and history.train_loss == 2.5
    assert history.steps[0]["step"] == 1 and "step_seconds" in history.steps[0]
    assert plot_loss(tmp_path / "loss.png", history).read_bytes()[:4] == b"\x89PNG"


def test_the_trainer_sees_the_inference_ids_then_the_answer(tiny_llama_path: Path, tmp_path: Path) -> None:
    """TRL gets pre-tokenized ids: no second BOS, no EOS after a layout's own end marker."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llama_unsloth import training as T
    from llama_unsloth.prompts import PromptFormat, encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    fmt = PromptFormat.get("reasoning")
    record = {"instruction": "Q?", "input": "C", "flag": "creator", "reasoning": "R", "output": "A"}
    data = tmp_path / "d.json"
    data.write_text(json.dumps([record] * 2), encoding="utf-8")
    model = T.add_lora(AutoModelForCausalLM.from_pretrained(tiny_llama_path), "transformers", T.LoraSettings(use_gradient_checkpointing="false"))
    dataset = T.to_text_dataset(data, fmt, tokenizer, 512)
    trainer = T.build_trainer(model, tokenizer, dataset, T.TrainSettings(max_steps=1), tmp_path / "run", "transformers",
                              T.TrainingHistory(), use_gradient_checkpointing="false")
    ids = trainer.train_dataset[0]["input_ids"]
    prompt = fmt.render_prompt("Q?", "C", flag="creator")
    assert ids[: len(encode_prompt(tokenizer, prompt))] == encode_prompt(tokenizer, prompt)
    text = tokenizer.decode(ids, skip_special_tokens=False)
    assert text == fmt.render_training(record) and text.endswith("A<|endoftext|>")
    assert tokenizer.eos_token not in text  # <|im_end|> is not appended after the layout's own <|endoftext|>


def test_model_card_says_how_to_serve_a_4bit_merge_with_vllm() -> None:
    from llama_unsloth import training as T
    from llama_unsloth.prompts import PromptFormat

    card = T.model_card(base_model="m", data_file="d.json", data_sha256="0" * 64, records=1, prompt_format=PromptFormat.get("alpaca"),
                        backend="unsloth", settings={"save": "merged_4bit", "output_dir": "out/nemo"}, history=T.TrainingHistory())
    assert "vllm serve out/nemo/merged --quantization bitsandbytes --served-model-name nemo --port 8001" in card
    lora = T.model_card(base_model="m", data_file="d.json", data_sha256="0" * 64, records=1, prompt_format=PromptFormat.get("alpaca"),
                        backend="unsloth", settings={"save": "lora", "output_dir": "out/nemo"}, history=T.TrainingHistory())
    assert "vllm serve out" not in lora and "--save merged_16bit" in lora
