"""llama_unsloth.training.trainer: LoRA, TRL's trainer with our settings, and what training did (from log_history)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


def test_cpu_falls_back_from_8bit_adam_and_mixed_precision() -> None:
    import torch

    from llama_unsloth.training import resolve_optimizer, resolve_precision

    if torch.cuda.is_available():
        pytest.skip("CPU behaviour")
    optim, note = resolve_optimizer("adamw_8bit")
    assert optim == "adamw_torch" and "CUDA" in note
    assert resolve_optimizer("adamw_torch") == ("adamw_torch", None)
    assert resolve_precision("auto") == "fp32" and resolve_precision("bf16") == "fp32"
    with pytest.raises(ValueError):
        resolve_precision("fp8")


def _trainer(tiny_llama_path: Path, tmp_path: Path, record: dict, fmt_name: str, max_steps: int = 1, **lora: object):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llama_unsloth import training as T
    from llama_unsloth.layouts import PromptFormat
    from llama_unsloth.training.arguments import FinetuneSFTConfig, LoraModelConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    fmt = PromptFormat.get(fmt_name)
    data = tmp_path / "d.json"
    data.write_text(json.dumps([record] * 2), encoding="utf-8")
    model_args = LoraModelConfig(use_gradient_checkpointing="false", **lora)
    model = T.add_lora(AutoModelForCausalLM.from_pretrained(tiny_llama_path), "transformers", model_args)
    dataset = T.to_text_dataset(data, fmt, tokenizer, 512)
    args = FinetuneSFTConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=max_steps,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=1,
        warmup_steps=0,
        learning_rate=1e-2,
        disable_tqdm=True,
    )
    return T.build_trainer(model, tokenizer, dataset, args, "transformers", "false"), tokenizer, fmt, model


def test_the_trainer_sees_the_inference_ids_then_the_answer(tiny_llama_path: Path, tmp_path: Path) -> None:
    """TRL gets pre-tokenized ids: no second BOS, no EOS after a layout's own end marker."""
    from llama_unsloth.layouts import encode_prompt

    record = {"instruction": "Q?", "input": "C", "flag": "creator", "reasoning": "R", "output": "A"}
    trainer, tokenizer, fmt, _ = _trainer(tiny_llama_path, tmp_path, record, "reasoning")
    ids = trainer.train_dataset[0]["input_ids"]
    prompt = fmt.render_prompt("Q?", "C", flag="creator")
    assert ids[: len(encode_prompt(tokenizer, prompt))] == encode_prompt(tokenizer, prompt)
    text = tokenizer.decode(ids, skip_special_tokens=False)
    assert text == fmt.render_training(record) and text.endswith("A<|endoftext|>")
    assert tokenizer.eos_token not in text  # <|im_end|> is not appended after the layout's own <|endoftext|>


def test_lora_gets_the_model_config_settings_through_trl(tiny_llama_path: Path, tmp_path: Path) -> None:
    """r, alpha, dropout and the target layers reach PEFT's LoraConfig (via TRL's get_peft_config), unchanged."""
    record = {"instruction": "Q?", "input": "", "output": "A"}
    _, _, _, model = _trainer(
        tiny_llama_path,
        tmp_path,
        record,
        "alpaca",
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.1,
        lora_target_modules=["q_proj"],
    )
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.1)
    assert set(config.target_modules) == {"q_proj"}  # a one-item list (TRL makes it a regex str) still works
    trainable = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"q_proj"}


def test_summary_is_read_from_the_trainers_log_history(tiny_llama_path: Path, tmp_path: Path) -> None:
    from llama_unsloth import training as T

    record = {"instruction": "Q?", "input": "", "output": "A"}
    trainer, *_ = _trainer(tiny_llama_path, tmp_path, record, "alpaca", max_steps=3)
    assert T.plot_loss(tmp_path / "none.png", T.TrainingSummary()) is None
    trainer.train()
    summary = T.TrainingSummary.from_state(trainer.state, seconds=1.0)
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert [s["step"] for s in summary.steps] == [1, 2, 3] == [e["step"] for e in logged]
    assert [s["loss"] for s in summary.steps] == [pytest.approx(e["loss"]) for e in logged]
    assert all(s["step_seconds"] > 0 and math.isfinite(s["loss"]) for s in summary.steps)
    assert summary.final_loss == summary.steps[-1]["loss"] and summary.global_step == 3 == summary.max_steps
    assert summary.train_loss is not None and summary.median_step_seconds() > 0
    assert T.plot_loss(tmp_path / "loss.png", summary).read_bytes()[:4] == b"\x89PNG"


def test_auto_precision_on_a_gpu_without_bf16_is_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same rule as the model's dtype (llama_unsloth.models.auto_dtype): a T4 trains in fp16."""
    import torch

    from llama_unsloth import import_utils
    from llama_unsloth.training import resolve_precision

    monkeypatch.setattr(import_utils, "cuda_available", lambda: True)
    for bf16, expected in ((False, "fp16"), (True, "bf16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        assert resolve_precision("auto") == expected
