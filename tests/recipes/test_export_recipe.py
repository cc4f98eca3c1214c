"""The export recipe: `llama-unsloth export FOLDER --gguf ...`, and bad input as one line, exit 2, before work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llama_unsloth.errors import ExportError
from tests.recipes._helpers import exit_code

pytestmark = pytest.mark.slow


def _run(args, capsys) -> tuple:
    from recipes.export import main

    rc = exit_code(main, args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_registered_in_the_cli() -> None:
    from recipes import RECIPES

    assert RECIPES["export"] == "recipes.export"


def test_folder_with_no_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    rc, _, err = _run([str(tmp_path / "empty"), "--gguf", "f16"], capsys)
    assert rc == 2 and "holds no model" in _one_error_line(err)
    rc, _, err = _run(["--model_dir", str(tmp_path / "missing"), "--gguf", "f16"], capsys)
    assert rc == 2 and "is not a folder" in _one_error_line(err)
    assert not (tmp_path / "empty" / "gguf").exists()


def test_unknown_quantization(tiny_llama_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, err = _run([str(tiny_llama_path), "--gguf", "q3_weird"], capsys)
    assert rc == 2 and "--gguf must be one of f16, q8_0, q4_k_m" in _one_error_line(err)
    assert not (tiny_llama_path / "gguf").exists()


def test_q4_k_m_without_llama_cpp(tiny_llama_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    import llama_unsloth.export.gguf as gguf_module

    monkeypatch.setattr(gguf_module, "quantizer_python", lambda: None)
    fetched: list = []
    monkeypatch.setattr(gguf_module, "fetch_converter", lambda say: fetched.append(1))
    rc, _, err = _run([str(tiny_llama_path), "--gguf", "q4_k_m"], capsys)
    line = _one_error_line(err)
    assert rc == 2 and "make serve-env" in line and "q8_0" in line
    assert not fetched and not (tiny_llama_path / "gguf").exists()  # said before any download or conversion


def test_unknown_architecture(
    tiny_llama_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    import llama_unsloth.export.gguf as gguf_module

    monkeypatch.setattr(gguf_module, "fetch_converter", lambda say: tmp_path / "converter")
    monkeypatch.setattr(gguf_module, "known_architectures", lambda root: {"GPT2LMHeadModel"})
    rc, _, err = _run([str(tiny_llama_path), "--gguf", "f16"], capsys)
    assert rc == 2 and "does not know the architecture LlamaForCausalLM" in _one_error_line(err)


def test_export_q8_0(tiny_llama_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from llama_unsloth.export import fetch_converter, read_gguf_metadata

    try:
        fetch_converter(lambda line: None)
    except ExportError as err:  # no package index here; CI reaches it
        pytest.skip(f"llama-cpp-python's sdist cannot be downloaded: {err}")
    folder = tmp_path / "merged"
    shutil.copytree(tiny_llama_path, folder)
    rc, out, _ = _run([str(folder), "--gguf", "q8_0", "--prompt_format", "alpaca"], capsys)
    assert rc == 0, out
    gguf = folder / "gguf" / "model-q8_0.gguf"
    assert f"GGUF:      {gguf}" in out and "Converting" in out and "ollama create" in out
    metadata = read_gguf_metadata(gguf)
    assert metadata["general.architecture"] == "llama" and metadata["general.file_type"] == 7  # MOSTLY_Q8_0
    assert metadata["tokenizer.ggml.eos_token_id"] == 2
    assert metadata["tokenizer.chat_template"].startswith("{#- llama-unsloth layout")
    modelfile = (folder / "gguf" / "Modelfile").read_text("utf-8")
    assert "### Instruction:\n{{ .Prompt }}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
