"""The finetune recipe end to end on the tiny random Llama (CPU, transformers backend)."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, List

import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLANTED_TOKEN = "hf_PlantedSecretToken_9f3c2a71"
REASONING_DATA = Path(__file__).resolve().parents[2] / "llama_unsloth" / "data" / "finetune_reasoning.jsonl"

# Small and fast: 3 steps, one short sequence per step, no checkpointing (CPU seconds).
FAST = [
    "--max-steps",
    "3",
    "--per-device-train-batch-size",
    "1",
    "--gradient-accumulation-steps",
    "1",
    "--warmup-steps",
    "1",
    "--max-seq-length",
    "128",
    "--backend",
    "transformers",
    "--no-load-in-4bit",
    "--use-gradient-checkpointing",
    "false",
]


def _records(n: int = 6) -> List[Dict[str, Any]]:
    return [
        {
            "instruction": f"Which treaty created bloc number {i}?",
            "input": f"Bloc {i} was created by the Treaty of Town {i}.",
            "output": f"The Treaty of Town {i}.",
        }
        for i in range(1, n + 1)
    ]


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _finetune(args: List[str], **kwargs: Any) -> int:
    from recipes.finetune import main

    return main(args, **kwargs)


def _forbid_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded before the data was checked")

    monkeypatch.setattr("llama_unsloth.models.loading.load_model", refuse)


def _reload(folder: Path) -> Any:
    from llama_unsloth import UnslothLLM

    return UnslothLLM.from_finetuned(
        folder, backend="transformers", load_in_4bit=False, max_new_tokens=4, set_global_tokenizer=False
    )


def _all_text(folder: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


# ------------------------------------------------------------------------------------------------ happy path
def test_finetune_writes_adapter_log_plot_card_merged_and_reloads(tmp_path: Path, tiny_llama_path: Path) -> None:
    from llama_unsloth.training import file_sha256

    data = _write_json(tmp_path / "train.json", _records())
    out = tmp_path / "out"
    code = _finetune(
        [
            "--model",
            str(tiny_llama_path),
            "--data",
            str(data),
            "--prompt-format",
            "alpaca",
            "--output-dir",
            str(out),
            "--save",
            "merged_16bit",
            *FAST,
        ]
    )
    assert code == 0

    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer_config.json",
        "prompt_format.json",
        "train_log.json",
        "loss.png",
        "README.md",
    ):
        assert (out / name).is_file(), name
    assert not list(out.glob("checkpoint-*")), "the trainer must not leave checkpoints behind"

    log = json.loads((out / "train_log.json").read_text())
    assert log["global_step"] == 3 and log["interrupted"] is False
    assert [s["step"] for s in log["steps"]] == [1, 2, 3]
    assert all(math.isfinite(s["loss"]) and s["loss"] > 0 for s in log["steps"])
    assert all("learning_rate" in s and "epoch" in s and s["step_seconds"] > 0 for s in log["steps"])
    assert log["final_loss"] == log["steps"][-1]["loss"]
    assert log["optimizer"] == "adamw_torch"  # adamw_8bit needs CUDA
    assert log["precision"] == "fp32"
    assert log["settings"]["r"] == 16 and log["settings"]["max_steps"] == 3

    png = (out / "loss.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000

    card = (out / "README.md").read_text()
    assert file_sha256(data) in card and "| Records | 6 |" in card and "`alpaca`" in card
    assert str(tiny_llama_path) in card and f"{log['final_loss']:.4f}" in card
    # The card states what this CPU run really used, not the GPU defaults it was asked for.
    assert (
        "| optim | `adamw_torch` |" in card
        and "| precision | `fp32` |" in card
        and "| load_in_4bit | `False` |" in card
    )
    assert f"| model | `{tiny_llama_path}` |" in card and "adamw_8bit" not in card
    # The exact command that serves the merged model with vLLM, and the ServedLLM line that prompts it in its layout.
    assert f"vllm serve {out}/merged --served-model-name out --port 8001" in card
    assert f'ServedLLM.from_finetuned("{out}/merged", api_base="http://127.0.0.1:8001/v1", model="out")' in card

    llm = _reload(out)
    assert llm.format.name == "alpaca"
    question = "Which treaty created bloc number 1?"
    adapter_answer = llm.complete(question).text
    assert llm.complete(question).raw["prompt"].startswith("Below is an instruction that describes a task")

    merged = out / "merged"
    assert (merged / "config.json").is_file() and (merged / "prompt_format.json").is_file()
    assert not (merged / "adapter_config.json").exists()
    merged_llm = _reload(merged)
    assert merged_llm.format.name == "alpaca"
    # The merged weights are the adapter folded in: same greedy answer (bf16 rounding aside, the first tokens).
    assert merged_llm.complete(question).raw["generated"][:3] == llm.complete(question).raw["generated"][:3]
    assert adapter_answer == llm.complete(question).text  # greedy is repeatable


def test_finetune_reasoning_jsonl_keeps_its_layout(tmp_path: Path, tiny_llama_path: Path) -> None:
    out = tmp_path / "out"
    code = _finetune(
        [
            "--model",
            str(tiny_llama_path),
            "--data",
            str(REASONING_DATA),
            "--prompt-format",
            "reasoning",
            "--output-dir",
            str(out),
            *FAST,
            "--max-steps",
            "2",
        ]
    )
    assert code == 0
    log = json.loads((out / "train_log.json").read_text())
    assert log["records"] == 8 and log["prompt_format"] == "reasoning" and log["global_step"] == 2
    llm = _reload(out)
    assert llm.format.name == "reasoning" and llm.format.answer_marker == "<|response|>"
    prompt = llm.complete("Is this trade diversion?").raw["prompt"]
    # The users' assistant system message (no flag given), ending where the model writes its reasoning.
    assert prompt == (
        "<s>You are an AI assistant who is good at providing answers in multiple languages. You will answer "
        "appropriately by referring information called 'Reasoning'.\n<|instruction|>Is this trade diversion?\n"
        "<|context|>\n<|reasoning|>"
    )


# ------------------------------------------------------------------------------------------------ bad data
def _missing_field(tmp_path: Path) -> Path:
    records = _records()
    del records[2]["output"]
    return _write_json(tmp_path / "missing.json", records)


def _non_string(tmp_path: Path) -> Path:
    records = _records()
    records[1]["input"] = 42
    path = tmp_path / "nonstring.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.json"
    path.write_text("", encoding="utf-8")
    return path


def _empty_list(tmp_path: Path) -> Path:
    return _write_json(tmp_path / "nothing.json", [])


def _not_json(tmp_path: Path) -> Path:
    path = tmp_path / "notes.json"
    path.write_text("instruction,input,output\nWhat?,x,y\n", encoding="utf-8")
    return path


def _broken_json(tmp_path: Path) -> Path:
    path = tmp_path / "broken.json"
    path.write_text('[{"instruction": "a", "input": "b", "output": "c"},\n{"instruction": ', encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "make_file, expected",
    [
        (_missing_field, ["missing.json", "record 3", "'output'"]),
        (_non_string, ["nonstring.jsonl", "record 2", "'input'", "string", "int"]),
        (_empty, ["empty.json", "empty"]),
        (_empty_list, ["nothing.json", "no training records"]),
        (_not_json, ["notes.json", "line 1", "not JSON"]),
        (_broken_json, ["broken.json", "not valid JSON", "line 2"]),
    ],
    ids=["missing-field", "non-string", "empty-file", "empty-list", "csv-not-json", "truncated-json"],
)
def test_bad_data_stops_before_any_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, make_file: Any, expected: List[str]
) -> None:
    _forbid_model_loading(monkeypatch)
    data = make_file(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        _finetune(["--model", str(tmp_path / "never-loaded"), "--data", str(data), "--output-dir", str(out), *FAST])
    message = capsys.readouterr().err
    assert err.value.code == 2 and message.startswith("error: ") and message.count("\n") == 1, message
    for part in expected:
        assert part in message, (part, message)
    assert not out.exists()


def test_missing_hf_token_and_bad_options_stop_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _forbid_model_loading(monkeypatch)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    data = _write_json(tmp_path / "train.json", _records())
    base = ["--model", str(tmp_path / "never-loaded"), "--data", str(data), "--output-dir", str(tmp_path / "out")]
    for extra, message in (
        (["--push-to-hub", "me/model"], "--push-to-hub needs a Hugging Face token with write access in the HF_TOKEN"),
        (["--save", "merged_8bit"], "--save must be one of lora, merged_16bit, merged_4bit; got 'merged_8bit'."),
        (
            ["--use-gradient-checkpointing", "yes"],
            "--use-gradient-checkpointing must be one of unsloth, true, false; got 'yes'.",
        ),
        (["--prompt-format", "alpacca"], "Unknown prompt format 'alpacca'"),
        (
            ["--push-to-hub", "model-without-user"],
            "--push-to-hub must be a Hub repository id user/name; got 'model-without-user'.",
        ),
    ):
        with pytest.raises(SystemExit) as exit_:
            _finetune([*base, *extra])
        err = capsys.readouterr().err
        # One line, exit 2 -- not argparse's usage block of every SFTConfig option, not a traceback.
        assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_saves_the_adapter_trained_so_far(
    tmp_path: Path, tiny_llama_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import TrainerCallback

    class CtrlCOnStep2(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            if state.global_step == 2:
                raise KeyboardInterrupt

    data = _write_json(tmp_path / "train.json", _records())
    out = tmp_path / "out"
    caplog.set_level(logging.INFO)
    code = _finetune(
        [
            "--model",
            str(tiny_llama_path),
            "--data",
            str(data),
            "--output-dir",
            str(out),
            "--save",
            "merged_16bit",
            *FAST,
            "--max-steps",
            "5",
        ],
        callbacks=[CtrlCOnStep2()],
    )
    assert code == 130
    assert "Interrupted at step 2 of 5" in caplog.text and "Saved the adapter after 2 steps" in caplog.text
    assert (out / "adapter_model.safetensors").is_file() and (out / "prompt_format.json").is_file()
    assert not (out / "merged").exists()  # merging is skipped after Ctrl-C, and the log says so
    log = json.loads((out / "train_log.json").read_text())
    assert log["interrupted"] is True and log["global_step"] == 2 and log["max_steps"] == 5
    assert (out / "loss.png").read_bytes().startswith(PNG_MAGIC)
    assert "Interrupted" in (out / "README.md").read_text()
    # The weights saved are the trained ones: LoRA's B matrices start at zero and two steps moved them.
    from safetensors.torch import load_file

    saved = load_file(str(out / "adapter_model.safetensors"))
    lora_b = [t for name, t in saved.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)
    llm = _reload(out)
    response = llm.complete("Hello?")
    assert llm.format.name == "alpaca" and response.raw["prompt"].startswith(
        "Below is an instruction that describes a task"
    )
    assert response.raw["completion_tokens"] >= 1


# ------------------------------------------------------------------------------------------------ Hub token
def test_hf_token_is_used_for_the_push_but_never_written(
    tmp_path: Path,
    tiny_llama_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pushed: List[Dict[str, Any]] = []

    def fake_push(folder: Any, repo_id: str, token: str, private: bool = True) -> str:
        pushed.append({"folder": Path(folder), "repo_id": repo_id, "token": token, "private": private})
        return f"https://huggingface.co/{repo_id}"

    monkeypatch.setenv("HF_TOKEN", PLANTED_TOKEN)
    monkeypatch.setattr("llama_unsloth.training.push_folder_to_hub", fake_push)
    caplog.set_level(logging.DEBUG)
    data = _write_json(tmp_path / "train.json", _records())
    out = tmp_path / "out"
    code = _finetune(
        [
            "--model",
            str(tiny_llama_path),
            "--data",
            str(data),
            "--output-dir",
            str(out),
            "--push-to-hub",
            "me/tiny",
            *FAST,
            "--max-steps",
            "1",
        ]
    )
    assert code == 0
    assert pushed == [{"folder": out, "repo_id": "me/tiny", "token": PLANTED_TOKEN, "private": True}]
    captured = capsys.readouterr()
    assert PLANTED_TOKEN not in captured.out + captured.err
    assert PLANTED_TOKEN not in caplog.text
    assert PLANTED_TOKEN.encode() not in _all_text(out)
    assert "https://huggingface.co/me/tiny" in caplog.text


def test_push_errors_mask_the_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub

    from llama_unsloth.training import push_folder_to_hub

    class LeakyApi:
        def __init__(self, token: str) -> None:
            self.token = token

        def create_repo(self, *args: Any, **kwargs: Any) -> str:
            raise PermissionError(f"401 for token {self.token}")

    monkeypatch.setattr(huggingface_hub, "HfApi", LeakyApi)
    with pytest.raises(RuntimeError) as err:
        push_folder_to_hub(tmp_path, "me/x", PLANTED_TOKEN)
    assert PLANTED_TOKEN not in str(err.value) and "***" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_help_shows_the_spec_defaults(capsys: pytest.CaptureFixture) -> None:
    from llama_unsloth.cli import main as cli_main

    with pytest.raises(SystemExit) as err:
        cli_main(["finetune", "--help"])
    assert err.value.code == 0
    text = capsys.readouterr().out
    # SPEC "Fine-tuning settings users run", as each option's help states its default.
    import re

    for flag, default in [
        ("--max-seq-length", "2048"),
        ("--r", "16"),
        ("--lora-alpha", "16"),
        ("--lora-dropout", "0.0"),
        ("--random-state", "3407"),
        ("--per-device-train-batch-size", "2"),
        ("--gradient-accumulation-steps", "4"),
        ("--warmup-steps", "5"),
        ("--max-steps", "100"),
        ("--learning-rate", "0.0002"),
        ("--optim", "adamw_8bit"),
        ("--weight-decay", "0.01"),
        ("--lr-scheduler-type", "linear"),
        ("--seed", "3407"),
        ("--save", "lora"),
        ("--use-gradient-checkpointing", "unsloth"),
        ("--load-in-4bit", "True"),
    ]:
        # argparse lists an option's names, then its help ending in "(default: X)"; find the entry naming the flag.
        entries = re.split(r"\n  (?=-)", text)
        entry = next((e for e in entries if re.search(rf"(^|, ){re.escape(flag)}\b(?![-_])", e)), None)
        assert entry is not None, flag
        assert f"(default: {default})" in " ".join(entry.split()), (flag, entry)
    assert "unsloth/Mistral-Nemo-Instruct-2407-bnb-4bit" in text and "--push-to-hub" in text


def test_config_file_sets_options_and_flags_win(tmp_path: Path) -> None:
    from recipes.config import parse
    from recipes.finetune import make_parser

    config_file = tmp_path / "ft.yaml"
    config_file.write_text(
        "data: d.jsonl\nmax_steps: 7\nprompt-format: reasoning\nlora_target_modules: [q_proj, v_proj]\n"
    )
    script, model, training = parse(make_parser(), ["--config", str(config_file), "--max-steps", "9"])
    assert (script.data, training.max_steps, script.prompt_format) == ("d.jsonl", 9, "reasoning")
    assert model.lora_target_modules == ["q_proj", "v_proj"] and model.lora_r == 16


# ------------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
def test_unsloth_merged_4bit_reloads_and_completes(tmp_path: Path) -> None:
    model = os.environ.get("LLAMA_UNSLOTH_GPU_MODEL")
    if not model:
        pytest.skip("set LLAMA_UNSLOTH_GPU_MODEL to a model folder or hub id on the GPU machine")
    data = Path(__file__).resolve().parents[2] / "llama_unsloth" / "data" / "finetune_alpaca.json"
    out = tmp_path / "out"
    code = _finetune(
        [
            "--model",
            model,
            "--data",
            str(data),
            "--output-dir",
            str(out),
            "--backend",
            "unsloth",
            "--save",
            "merged_4bit",
            "--max-steps",
            "5",
            "--max-seq-length",
            "512",
        ]
    )
    assert code == 0
    log = json.loads((out / "train_log.json").read_text())
    assert log["backend"] == "unsloth" and log["optimizer"] == "adamw_8bit" and log["precision"] in ("bf16", "fp16")
    assert all(math.isfinite(s["loss"]) for s in log["steps"])
    from llama_unsloth import UnslothLLM

    llm = UnslothLLM.from_finetuned(out / "merged", max_new_tokens=8, set_global_tokenizer=False)
    assert llm.backend_name == "unsloth" and llm.format.name == "alpaca"
    response = llm.complete("Which treaty created Mercosur?")
    assert (
        response.raw["prompt"].startswith("Below is an instruction that describes a task")
        and response.raw["completion_tokens"] >= 1
    )


# ------------------------------------------------------------------------------------------------ bad numeric options (issue 10)
# Each is refused as the command starts: one line naming the flag and its allowed range, exit code 2,
# no model loaded, no output folder created.
@pytest.mark.parametrize(
    "args, message",
    [
        (["--learning-rate", "-1"], "--learning-rate must be > 0 and <= 1; got -1."),
        (["--learning-rate", "0"], "--learning-rate must be > 0 and <= 1; got 0."),
        (["--per-device-train-batch-size", "0"], "--per-device-train-batch-size must be >= 1; got 0."),
        (["--gradient-accumulation-steps", "0"], "--gradient-accumulation-steps must be >= 1; got 0."),
        (["--r", "0"], "--r must be >= 1; got 0."),
        (["--lora-alpha", "0"], "--lora-alpha must be >= 1; got 0."),
        (["--lora-dropout", "1"], "--lora-dropout must be >= 0 and < 1; got 1."),
        (["--max-steps", "0"], "--max-steps must be >= 1 (or -1); got 0."),
        (["--max-steps", "-2"], "--max-steps must be >= 1 (or -1); got -2."),
        (["--max-steps", "-1", "--num-train-epochs", "0"], "--num-train-epochs must be > 0; got 0."),
        (["--warmup-steps", "-1"], "--warmup-steps must be >= 0; got -1."),
        (["--weight-decay", "-0.1"], "--weight-decay must be >= 0; got -0.1."),
        (["--max-seq-length", "0"], "--max-seq-length must be >= 8; got 0."),
        (["--logging-steps", "0"], "--logging-steps must be >= 1; got 0."),
    ],
)
def test_bad_numeric_options_stop_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args: List[str], message: str
) -> None:
    _forbid_model_loading(monkeypatch)
    data = _write_json(tmp_path / "train.json", _records())
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        _finetune(["--model", str(tmp_path / "never-loaded"), "--data", str(data), "--output-dir", str(out), *args])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not out.exists()


def test_max_steps_minus_one_means_epochs_and_passes_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_model_loading(monkeypatch)
    data = _write_json(tmp_path / "train.json", _records())
    # It gets past option checking and data checks to the model load (which this test forbids).
    with pytest.raises(AssertionError, match="a model was loaded"):
        _finetune(
            [
                "--model",
                str(tmp_path / "m"),
                "--data",
                str(data),
                "--output-dir",
                str(tmp_path / "out"),
                "--max-steps",
                "-1",
            ]
        )


def test_offline_hub_base_model_is_one_line_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _forbid_model_loading(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    data = _write_json(tmp_path / "train.json", _records())
    with pytest.raises(SystemExit) as exit_:
        _finetune(
            [
                "--model",
                "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit",
                "--data",
                str(data),
                "--output-dir",
                str(tmp_path / "out"),
            ]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "'unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit' is not found locally and there is no network" in err
    )
    assert not (tmp_path / "out").exists()


def test_a_run_that_cannot_fit_the_gpu_stops_before_loading_and_names_a_setting_that_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from benchmarks.architectures import ARCHITECTURES
    from tests.recipes._helpers import exit_code

    model = tmp_path / "gemma-2-27b"
    ARCHITECTURES["gemma2-27b"].config().save_pretrained(model)  # config.json only: nothing can load from it
    _forbid_model_loading(monkeypatch)
    data = _write_json(tmp_path / "d.json", _records())
    out = tmp_path / "out"
    args = ["--model", str(model), "--data", str(data), "--output-dir", str(out), "--gpu-memory-gib", "20"]
    from recipes.finetune import main

    assert exit_code(main, args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: fine-tuning needs about 21.0 GiB")
    assert "--per-device-train-batch-size 1 --gradient-accumulation-steps 8" in err and "--no-memory-check" in err
    assert not out.exists()


def test_out_of_memory_mid_run_is_one_line_and_leaves_nothing_half_written(
    tmp_path: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import torch
    from transformers import TrainerCallback

    from recipes.finetune import main

    class OutOfMemoryAtStep2(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            if state.global_step == 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    data = _write_json(tmp_path / "d.json", _records())
    out = tmp_path / "out"
    args = ["--model", str(tiny_llama_path), "--data", str(data), "--output-dir", str(out), "--max-steps", "3"]
    args += ["--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "1", "--max-seq-length", "64"]
    try:
        code = main(args, callbacks=[OutOfMemoryAtStep2()])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1  # one line, no CUDA traceback
    err = errors[0]
    assert err.startswith(
        "error: the GPU ran out of memory at step 1 of 3 with batch 2 x 64 tokens; nothing was saved"
    )
    assert "--gradient-accumulation-steps" in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ output folder (issue 24)
def _snapshot(folder: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(capsys: pytest.CaptureFixture, code: Any) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_an_existing_output_folder_is_refused_before_loading_and_left_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from tests.recipes._helpers import exit_code

    _forbid_model_loading(monkeypatch)
    data = _write_json(tmp_path / "train.json", _records())
    out = tmp_path / "out"
    (out / "merged").mkdir(parents=True)
    (out / "merged" / "model.safetensors").write_bytes(b"old weights")
    for name in ("adapter_model.safetensors", "prompt_format.json", "train_log.json", "README.md"):
        (out / name).write_text(f"earlier run: {name}")
    before = _snapshot(out)
    args = ["--model", str(tmp_path / "never-loaded"), "--data", str(data), "--output-dir", str(out), *FAST]
    err = _one_error_line(capsys, exit_code(_finetune, args))
    assert f"--output_dir {out} already holds an earlier run (merged/, adapter_model.safetensors" in err
    assert "pass --overwrite_output_dir to replace it" in err
    # Files a fine-tune never writes: refused with the flag too, and nothing deleted.
    (out / "my_notes.txt").write_text("mine")
    before["my_notes.txt"] = b"mine"
    err = _one_error_line(capsys, exit_code(_finetune, [*args, "--overwrite_output_dir"]))
    assert "holds files a fine-tune does not write (my_notes.txt)" in err and "nothing was deleted" in err
    assert _snapshot(out) == before


def test_overwrite_output_dir_leaves_nothing_of_the_earlier_run(tmp_path: Path, tiny_llama_path: Path) -> None:
    data = _write_json(tmp_path / "train.json", _records())
    out = tmp_path / "out"
    base = ["--model", str(tiny_llama_path), "--output-dir", str(out), *FAST, "--max-steps", "1"]
    assert _finetune([*base, "--data", str(data), "--prompt-format", "alpaca", "--save", "merged_16bit"]) == 0
    assert (out / "merged" / "config.json").is_file()
    code = _finetune([*base, "--data", str(REASONING_DATA), "--prompt-format", "reasoning", "--overwrite_output_dir"])
    assert code == 0
    assert not (out / "merged").exists(), "the earlier run's merged model must not stay beside the new adapter"
    log = json.loads((out / "train_log.json").read_text())
    assert log["prompt_format"] == "reasoning" and log["records"] == 8
    assert "`reasoning`" in (out / "README.md").read_text()
    assert _reload(out).format.name == "reasoning"


def test_resume_from_a_checkpoint_in_the_output_folder_keeps_its_checkpoints(
    tmp_path: Path, tiny_llama_path: Path
) -> None:
    from transformers import TrainerCallback

    class CtrlCAfterStep2(TrainerCallback):  # as step 3 begins: checkpoint-2 is saved by then
        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            if state.global_step == 2:
                raise KeyboardInterrupt

    data = _write_json(tmp_path / "train.json", _records())
    out = tmp_path / "out"
    args = ["--model", str(tiny_llama_path), "--data", str(data), "--output-dir", str(out), *FAST]
    args += ["--max-steps", "4", "--save-strategy", "steps", "--save-steps", "1"]
    assert _finetune(args, callbacks=[CtrlCAfterStep2()]) == 130
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    # No --overwrite_output_dir needed: the checkpoint is in the folder, and stays.
    assert _finetune([*args, "--resume_from_checkpoint", str(out / "checkpoint-2")]) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert log["global_step"] == 4 and log["interrupted"] is False
    assert [s["step"] for s in log["steps"]] == [1, 2, 3, 4]  # steps 1-2 from the checkpoint, 3-4 trained now
    assert {"checkpoint-1", "checkpoint-2", "checkpoint-4"} <= {p.name for p in out.glob("checkpoint-*")}
    assert "Interrupted" not in (out / "README.md").read_text()
    assert _reload(out).format.name == "alpaca"


def test_an_output_dir_that_cannot_be_written_is_refused_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from tests.recipes._helpers import exit_code

    _forbid_model_loading(monkeypatch)
    data = _write_json(tmp_path / "train.json", _records())
    base = ["--model", str(tmp_path / "never-loaded"), "--data", str(data), *FAST]
    err = _one_error_line(capsys, exit_code(_finetune, [*base, "--output-dir", str(data / "out")]))
    assert f"--output_dir {data / 'out'} lies inside {data}, which is a file, not a folder" in err
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            err = _one_error_line(capsys, exit_code(_finetune, [*base, "--output-dir", str(locked / "out")]))
        finally:
            locked.chmod(0o700)
        assert "cannot be written" in err and "read-only" in err


def test_merged_4bit_on_a_cpu_machine_has_a_card_that_says_16bit(tmp_path: Path, tiny_llama_path: Path) -> None:
    from llama_unsloth.import_utils import is_bitsandbytes_available

    if is_bitsandbytes_available():
        pytest.skip("this machine can write a 4-bit merge")
    data = _write_json(tmp_path / "train.json", _records())
    out = tmp_path / "out"
    args = ["--model", str(tiny_llama_path), "--data", str(data), "--output-dir", str(out), *FAST]
    with pytest.warns(UserWarning, match="saving the merged model in 16-bit"):
        assert _finetune([*args, "--max-steps", "1", "--save", "merged_4bit"]) == 0
    assert "quantization_config" not in json.loads((out / "merged" / "config.json").read_text())
    for card in ((out / "README.md").read_text(), (out / "merged" / "README.md").read_text()):
        assert "--quantization bitsandbytes" not in card
        assert f"vllm serve {out}/merged --served-model-name out --port 8001" in card
        assert "holds the merged model in **16-bit**" in card


@pytest.mark.parametrize(
    "line, named",
    [
        ("max_steps: 2.5", "max_steps must be an integer; got 2.5"),
        ("learning_rate: fast", "learning_rate must be a number; got 'fast'"),
        ("lora_r: 16.0", "lora_r must be an integer; got 16.0"),
        ("model_name_or_path: 123", "model_name_or_path must be text or null; got 123"),
    ],
)
def test_wrong_types_in_a_config_file_stop_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, line: str, named: str
) -> None:
    from tests.recipes._helpers import exit_code

    _forbid_model_loading(monkeypatch)
    data = _write_json(tmp_path / "train.json", _records())
    config = tmp_path / "ft.yaml"
    config.write_text(f"data: {data}\noutput_dir: {tmp_path / 'out'}\n{line}\n", encoding="utf-8")
    err = _one_error_line(capsys, exit_code(_finetune, ["--config", str(config)]))
    assert named in err, err
    assert not (tmp_path / "out").exists()
