"""llama_unsloth.models.paths: what a model folder holds, its adapter's base and its config.json, read before loading."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks.architectures import ARCHITECTURES


def _adapter(folder: Path, base: object) -> Path:
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}), encoding="utf-8")
    return folder


def test_model_paths_that_are_not_models_are_one_clear_error(tmp_path: Path) -> None:
    from llama_unsloth.errors import ModelLoadError
    from llama_unsloth.models import check_model_path

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json .* or adapter_config.json"):
        check_model_path(str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_model_path(str(tmp_path / "missing"))
    check_model_path("unsloth/Mistral-Nemo-Instruct-2407-bnb-4bit")  # a hub id is left to the loader


def test_an_adapter_folder_names_its_base_and_a_full_model_is_no_adapter(tmp_path: Path) -> None:
    from llama_unsloth.models import adapter_base, is_adapter_folder

    adapter = _adapter(tmp_path / "adapter", "unsloth/Mistral-Nemo-Instruct-2407-bnb-4bit")
    assert is_adapter_folder(adapter) and is_adapter_folder(str(adapter))
    assert adapter_base(str(adapter)) == adapter_base(adapter) == "unsloth/Mistral-Nemo-Instruct-2407-bnb-4bit"
    # An adapter saved with its merged model beside it is a full model folder: loaders read config.json.
    (adapter / "config.json").write_text("{}", encoding="utf-8")
    assert not is_adapter_folder(adapter) and adapter_base(str(adapter)) is None
    assert adapter_base(str(_adapter(tmp_path / "no-base", None))) is None
    assert adapter_base(str(tmp_path / "missing")) is None


def test_a_loaded_peft_model_names_its_base_from_its_peft_config() -> None:
    from llama_unsloth.models import adapter_base

    # PEFT's PeftModel.peft_config: adapter name -> LoraConfig read from adapter_config.json.
    model = SimpleNamespace(peft_config={"default": SimpleNamespace(base_model_name_or_path="org/base")})
    assert adapter_base(model) == "org/base"
    assert adapter_base(SimpleNamespace(peft_config={"default": SimpleNamespace()})) is None
    assert adapter_base(object()) is None  # a plain model: no adapter


def test_prequantized_means_a_quantization_config_in_config_json(tmp_path: Path) -> None:
    from llama_unsloth.models import is_prequantized

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    quantized = tmp_path / "bnb-4bit"
    quantized.mkdir()
    (quantized / "config.json").write_text(
        json.dumps({"model_type": "llama", "quantization_config": {"load_in_4bit": True}}), encoding="utf-8"
    )
    assert is_prequantized(str(quantized)) and not is_prequantized(str(plain))
    assert not is_prequantized(str(tmp_path / "missing"))
    assert not is_prequantized("unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit")  # a hub id: no folder to read


def test_adapter_folder_reads_its_base_config(tmp_path: Path) -> None:
    from llama_unsloth.models import read_model_config

    base = tmp_path / "base"
    ARCHITECTURES["mistral-nemo-12b"].config().save_pretrained(base)
    adapter = _adapter(tmp_path / "adapter", str(base))
    assert read_model_config(str(adapter))["hidden_size"] == 5120
    assert read_model_config(str(base))["hidden_size"] == 5120
    assert read_model_config(str(tmp_path / "nothing-here")) is None
    assert read_model_config(str(_adapter(tmp_path / "no-base", None))) is None
