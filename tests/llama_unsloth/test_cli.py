"""llama_unsloth.cli: one command for every recipe, and the recipes' one error path."""

from __future__ import annotations

import pytest


def test_usage_lists_every_recipe_with_what_it_does(capsys: pytest.CaptureFixture) -> None:
    from llama_unsloth.cli import main
    from recipes import RECIPES

    assert main([]) == 0
    out = capsys.readouterr().out
    for name in RECIPES:
        assert f"\n  {name} " in out, name
    assert "Fine-tune a model with LoRA" in out and "Ask one question over a Chroma index" in out


def test_unknown_recipe_and_bad_options_are_one_line_exit_2(capsys: pytest.CaptureFixture, tmp_path) -> None:
    from llama_unsloth.cli import main

    assert main(["serve"]) == 2
    assert capsys.readouterr().err.startswith("llama-unsloth: unknown recipe 'serve'; choose one of finetune, index")
    for argv, message in (
        (["index", "--input-dir", str(tmp_path), "--chunk-size", "8"], "error: --chunk-size must be >= 16; got 8.\n"),
        (["query", "--question", "q", "--top-k", "3"], "error: unknown option(s) --top-k 3 (see --help)\n"),
        (["batch", "--questions", "q.txt", "--workers", "0"], "error: --workers must be >= 1 and <= 256; got 0.\n"),
        (
            ["finetune", "--data", "d.json", "--lora-dropout", "1.5"],
            "error: --lora-dropout must be >= 0 and < 1; got 1.5.\n",
        ),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and capsys.readouterr().err == message, argv
