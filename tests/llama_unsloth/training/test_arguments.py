"""llama_unsloth.training.arguments: TRL's config classes carry our users' notebook settings, each defined once."""

from __future__ import annotations

import pytest


def test_defaults_are_the_users_notebook_settings() -> None:
    """SPEC "Fine-tuning settings users run": the values as the users' Unsloth notebooks write them."""
    from llama_unsloth.training.arguments import FinetuneScriptArguments, FinetuneSFTConfig, LoraModelConfig

    model = LoraModelConfig()
    assert (model.lora_r, model.lora_alpha, model.lora_dropout, model.random_state) == (16, 16, 0, 3407)
    assert model.lora_target_modules == [f"{n}_proj" for n in ("q", "k", "v", "o", "gate", "up", "down")]
    assert (model.use_gradient_checkpointing, model.load_in_4bit, model.backend) == ("unsloth", True, "auto")
    args = FinetuneSFTConfig()
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.warmup_steps, args.max_steps) == (
        2,
        4,
        5,
        100,
    )
    assert (args.learning_rate, args.weight_decay, args.seed, args.max_length) == (2e-4, 0.01, 3407, 2048)
    assert str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)) == "linear"
    assert FinetuneScriptArguments(data="d.json").save == "lora"


def test_cpu_run_config_holds_what_really_runs() -> None:
    """adamw_8bit and bf16 need CUDA: on CPU the config says adamw_torch and fp32, which the trainer then uses."""
    import torch

    from llama_unsloth.training.arguments import FinetuneSFTConfig

    if torch.cuda.is_available():
        pytest.skip("CPU behaviour")
    args = FinetuneSFTConfig(optim="adamw_8bit", precision="bf16")
    assert str(getattr(args.optim, "value", args.optim)) == "adamw_torch" and "CUDA" in args.optim_note
    assert (args.precision, args.bf16, args.fp16) == ("fp32", False, False)


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        ("FinetuneSFTConfig", {"learning_rate": 0}, "--learning-rate must be > 0 and <= 1; got 0."),
        ("FinetuneSFTConfig", {"max_steps": 0}, "--max-steps must be >= 1 (or -1); got 0."),
        ("FinetuneSFTConfig", {"precision": "fp8"}, "--precision must be one of auto, bf16, fp16, fp32; got 'fp8'."),
        ("LoraModelConfig", {"lora_r": 0}, "--r must be >= 1; got 0."),
        ("LoraModelConfig", {"backend": "vllm"}, "--backend must be one of auto, unsloth, transformers; got 'vllm'."),
        (
            "FinetuneScriptArguments",
            {"data": "d.json", "save": "merged_4bit_forced"},
            "--save must be one of lora, merged_16bit, merged_4bit; got 'merged_4bit_forced'.",
        ),
    ],
)
def test_python_callers_get_the_same_one_line_checks(cls: str, kwargs: dict, message: str) -> None:
    from llama_unsloth.errors import OptionError
    from llama_unsloth.training import arguments

    with pytest.raises(OptionError) as err:
        getattr(arguments, cls)(**kwargs)
    assert str(err.value) == message


def test_the_settings_record_is_every_option_our_classes_declare_under_its_flag_name() -> None:
    """train_log.json's settings and the model card's table: read from the dataclasses, not copied by hand."""
    from llama_unsloth.training.arguments import (
        FinetuneScriptArguments,
        FinetuneSFTConfig,
        LoraModelConfig,
        settings_record,
    )

    script = FinetuneScriptArguments(data="d.json", save="merged_16bit")
    model = LoraModelConfig(lora_r=8, use_rslora=True)
    training = FinetuneSFTConfig(output_dir="out/x", max_length=512)
    record = settings_record(script, model, training, model="org/base", backend="transformers")
    assert (record["data"], record["save"], record["output_dir"]) == ("d.json", "merged_16bit", "out/x")
    # A flag alias names the setting: --model, --r, --target-modules, --max-seq-length.
    assert (record["model"], record["r"], record["max_seq_length"], record["use_rslora"]) == ("org/base", 8, 512, True)
    assert record["target_modules"] == model.lora_target_modules and "lora_r" not in record
    # TRL's enums as their values; what the run resolved replaces what was asked.
    assert (record["lr_scheduler_type"], record["optim"], record["backend"]) == (
        "linear",
        "adamw_torch",
        "transformers",
    )
    assert {"packing", "completion_only_loss", "precision", "seed", "random_state"} <= set(record)
    # TRL's many other fields (and ours that are not options) stay out.
    assert not {"report_to", "bf16", "use_peft", "push_to_hub_token", "logging_dir"} & set(record)
    with pytest.raises(ValueError, match="Not settings of this run: modle"):
        settings_record(script, model, training, modle="org/base")
