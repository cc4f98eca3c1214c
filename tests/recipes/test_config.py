"""``--config`` values checked against their options' types before anything loads (recipes.config.check_config_types).

TRL sets a config file's values as argparse defaults, which argparse neither converts nor checks: without this
check a float in an integer option or a number where text belongs reached the dataclasses and failed late, as
a traceback after the index and the model had loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import pytest

from tests.recipes._helpers import exit_code


@pytest.fixture
def nothing_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if a recipe gets past its option checks: no index, embedding model, LLM or training run."""
    import llama_unsloth.rag
    import recipes.finetune
    import recipes.index
    from llama_unsloth.llms import factory

    def refuse(what: str) -> Any:
        return lambda *a, **k: pytest.fail(f"{what} although an option was wrong")

    monkeypatch.setattr(llama_unsloth.rag, "open_index_with_embeddings", refuse("opened the index"))
    monkeypatch.setattr(llama_unsloth.rag, "make_embed_model", refuse("loaded the embedding model"))
    monkeypatch.setattr(factory, "load_llm", refuse("loaded the model"))
    monkeypatch.setattr(recipes.index, "_run", refuse("indexed"))
    monkeypatch.setattr(recipes.finetune, "run", refuse("started the fine-tune"))


def _main(recipe: str) -> Any:
    import importlib

    return importlib.import_module(f"recipes.{recipe}").main


def _argv(recipe: str, tmp_path: Path) -> List[str]:
    """The least each recipe needs besides its --config (files that exist, outputs that can be written)."""
    questions = tmp_path / "questions.txt"
    questions.write_text("What limits trade?\n", encoding="utf-8")
    data = tmp_path / "train.jsonl"
    data.write_text('{"instruction": "q", "output": "a"}\n', encoding="utf-8")
    return {
        "query": ["--question", "What limits trade?"],
        "batch": ["--questions", str(questions), "--out", str(tmp_path / "answers")],
        "compare": ["--questions", str(questions), "--out-dir", str(tmp_path / "compare")],
        "index": ["--input-dir", str(tmp_path)],
        "finetune": ["--data", str(data), "--output_dir", str(tmp_path / "out")],
    }[recipe]


def _run_with_config(recipe: str, text: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> tuple:
    config = tmp_path / "run.yaml"
    config.write_text(text, encoding="utf-8")
    rc = exit_code(_main(recipe), [*_argv(recipe, tmp_path), "--config", str(config)])
    return rc, capsys.readouterr().err, config


WRONG_TYPES = [
    # (recipe, config line, what the one error line says after "--config <file>: ")
    ("query", "max_new_tokens: 12.5\n", "max_new_tokens must be an integer; got 12.5."),
    ("query", "max_seq_length: 4096.0\n", "max_seq_length must be an integer; got 4096.0."),
    ("query", "max_new_tokens: true\n", "max_new_tokens must be an integer; got true."),
    (
        "query",
        "model: 2024\n",
        "model must be text or null; got 2024 (YAML reads it as a number: put the value in quotes).",
    ),
    ("query", "load_in_4bit: 1\n", "load_in_4bit must be true or false; got 1."),
    ("query", "fast_decode_mode: fast\n", "fast_decode_mode must be one of auto, compile, graphs, eager; got 'fast'."),
    ("query", "weights: 8\n", "weights must be one of bf16, int8, int4 or null; got 8."),
    (
        "query",
        "prompt_fields: [instruction, 3]\n",
        'prompt_fields must be a list of text or null; got ["instruction", 3].',
    ),
    ("query", "question: 42\n", "question must be text; got 42 (YAML reads it as a number: put the value in quotes)."),
    ("query", "chroma_port: eighty\n", "chroma_port must be an integer or null; got 'eighty'."),
    ("batch", "batch_size: 2.5\n", "batch_size must be an integer; got 2.5."),
    ("batch", "top_n: ten\n", "top_n must be an integer; got 'ten'."),
    ("batch", "rag: maybe\n", "rag must be true or false; got 'maybe'."),
    ("batch", "povs: [a.txt, b.txt]\n", 'povs must be text or null; got ["a.txt", "b.txt"].'),
    ("compare", "workers: 1.5\n", "workers must be an integer; got 1.5."),
    ("index", "chunk_size: 1000.5\n", "chunk_size must be an integer or null; got 1000.5."),
    ("index", "embed_backend: openai\n", "embed_backend must be one of huggingface, cohere; got 'openai'."),
    (
        "index",
        "collection: 2024-05-01\n",
        "collection must be text; got 2024-05-01 (YAML reads it as a date: put the value in quotes).",
    ),
    ("finetune", "max_steps: 10.5\n", "max_steps must be an integer; got 10.5."),
    ("finetune", "lora_r: 8.0\n", "lora_r must be an integer; got 8.0."),
    ("finetune", "learning_rate: fast\n", "learning_rate must be a number; got 'fast'."),
    ("finetune", "save: merged\n", "save must be one of lora, merged_16bit, merged_4bit; got 'merged'."),
    (
        "finetune",
        "save_strategy: no\n",
        "save_strategy must be text; got false (YAML reads it as true/false: put the value in quotes).",
    ),
    ("finetune", "packing: 0\n", "packing must be true or false; got 0."),
    ("finetune", "lora_target_modules: {q: 1}\n", 'lora_target_modules must be a list of text or null; got {"q": 1}.'),
    ("finetune", "data: 7\n", "data must be text; got 7 (YAML reads it as a number: put the value in quotes)."),
]


@pytest.mark.parametrize("recipe,text,message", WRONG_TYPES, ids=[f"{r}-{t.split(':')[0]}" for r, t, _ in WRONG_TYPES])
def test_wrong_type_in_config_is_one_line_before_anything_loads(
    recipe: str, text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture, nothing_loads: None
) -> None:
    rc, err, config = _run_with_config(recipe, text, tmp_path, capsys)
    assert rc == 2
    assert err.strip().splitlines() == [f"error: --config {config}: {message}"]


@pytest.mark.parametrize(
    "recipe,text,message",
    [
        ("query", "max_new_tokens: 0\n", "--max-new-tokens must be >= 1; got 0."),
        ("batch", "top_n: 20\nquery_top_n: 10\n", "--top-n (20) must not exceed --query-top-n (10)"),
        (
            "index",
            "chunk_size: 100\nchunk_overlap: 200\n",
            "--chunk-overlap must be below --chunk-size (100); got 200.",
        ),
        ("finetune", "learning_rate: 2.0\n", "--learning-rate must be > 0 and <= 1; got 2."),
    ],
)
def test_range_checks_run_on_config_values(
    recipe: str, text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture, nothing_loads: None
) -> None:
    rc, err, _ = _run_with_config(recipe, text, tmp_path, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_unknown_key_in_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, nothing_loads: None) -> None:
    rc, err, config = _run_with_config("query", "max_new_token: 8\n", tmp_path, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: --config {config}: unknown option(s) max_new_token; valid: "
    )


def test_env_section_must_be_a_mapping(tmp_path: Path, capsys: pytest.CaptureFixture, nothing_loads: None) -> None:
    rc, err, config = _run_with_config("query", "env: [HF_HUB_OFFLINE]\n", tmp_path, capsys)
    assert rc == 2
    assert err.strip().splitlines() == [
        f'error: --config {config}: env must be a mapping of variable names to values; got ["HF_HUB_OFFLINE"].'
    ]


def _parse(recipe: str, text: str, tmp_path: Path) -> tuple:
    import importlib

    from recipes.config import parse

    config = tmp_path / "run.yaml"
    config.write_text(text, encoding="utf-8")
    module = importlib.import_module(f"recipes.{recipe}")
    return parse(module.make_parser(), [*_argv(recipe, tmp_path), "--config", str(config)])


def test_values_the_command_line_would_take_are_converted_the_same_way(tmp_path: Path) -> None:
    # Quoted numbers read as the command line reads them; PyYAML reads 2e-4 (no dot) as text.
    _, model, training = _parse(
        "finetune",
        "learning_rate: 2e-4\nseed: '42'\nnum_train_epochs: 2\nlora_target_modules: q_proj\n"
        "use_gradient_checkpointing: false\nmemory_check: 'no'\n",
        tmp_path,
    )
    assert training.learning_rate == 2e-4 and training.seed == 42 and training.num_train_epochs == 2
    assert model.lora_target_modules == ["q_proj"]  # one value is one item, as after --target-modules
    assert model.use_gradient_checkpointing == "false"  # YAML's bool false meant the choice "false"
    script, *_ = _parse("finetune", "memory_check: 'no'\n", tmp_path)
    assert script.memory_check is False
    _, model, _ = _parse("finetune", "lora_target_modules: all-linear\n", tmp_path)
    assert model.lora_target_modules == "all-linear"  # PEFT's keyword, kept as TRL keeps it


def test_good_query_config_parses_into_the_options(tmp_path: Path) -> None:
    args, index, retrieval, model = _parse(
        "query",
        "max_new_tokens: 64\nmodel: '2024'\nprompt_fields: [instruction, input, context]\nchroma_port: '8001'\n"
        "similarity_top_k: null\nload_in_4bit: false\nstream: yes\n",
        tmp_path,
    )
    assert model.max_new_tokens == 64 and model.model == "2024" and model.load_in_4bit is False
    assert model.prompt_fields == ["instruction", "input", "context"]
    assert index.chroma_port == 8001 and retrieval.similarity_top_k is None and args.stream is True


def test_flags_still_override_config_values(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("max_new_tokens: 64\n", encoding="utf-8")
    from recipes.config import parse
    from recipes.query import make_parser

    *_, model = parse(make_parser(), ["--question", "q", "--config", str(config), "--max-new-tokens", "8"])
    assert model.max_new_tokens == 8


def test_a_config_reads_the_same_after_a_library_changed_yamls_global_loader(
    tmp_path: Path, capsys: pytest.CaptureFixture, nothing_loads: None
) -> None:
    # lm-format-enforcer (structured outputs) makes PyYAML's global SafeLoader read dates as text on import: the
    # config check must not depend on what else the process imported.
    import lmformatenforcer.external.jsonschemaobjectutil  # noqa: F401 - the import is the change
    import yaml

    assert isinstance(yaml.safe_load("d: 2024-05-01")["d"], str)
    rc, err, _ = _run_with_config("index", "collection: 2024-05-01\n", tmp_path, capsys)
    assert rc == 2 and "YAML reads it as a date: put the value in quotes" in err
