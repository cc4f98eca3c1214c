"""hub_check: a hub id that cannot load offline is one line before anything loads; folders and cached ids pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_unsloth import hub_check
from llama_unsloth.hub_check import hub_model_cached, hub_offline, looks_like_path, offline_model_problem

MESSAGE = (
    "Model 'nobody/no-such-model' is not found locally and there is no network (HF_HUB_OFFLINE=1): pass a local "
    "folder (--model path/to/model) or set LLAMA_UNSLOTH_MODEL=path/to/model."
)


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in hub_check.OFFLINE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache folder, used by ``try_to_load_from_cache``."""
    from huggingface_hub import constants

    folder = tmp_path / "hub-cache"
    folder.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))
    return folder


def _cache_model(cache: Path, repo_id: str) -> None:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/config.json}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}", encoding="utf-8")


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on", " 1 "])
@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_when_either_variable_says_so(online: None, monkeypatch: pytest.MonkeyPatch, variable, value) -> None:
    monkeypatch.setenv(variable, value)
    assert hub_offline() is True


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off"])
def test_online_when_the_variables_say_no_or_are_unset(online: None, monkeypatch: pytest.MonkeyPatch, value) -> None:
    assert hub_offline() is False
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", value)
    assert hub_offline() is False


def test_paths_and_hub_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("./out/model", "../model", "/abs/model", "~/models/x", str(tmp_path)):
        assert looks_like_path(name), name
    # A hub id has a slash too: it is a path only when such a folder exists here.
    monkeypatch.chdir(tmp_path)
    assert not looks_like_path("unsloth/Mistral-Nemo-Instruct-2407-bnb-4bit")
    assert not looks_like_path("gpt2")
    (tmp_path / "outputs" / "my-model").mkdir(parents=True)
    assert looks_like_path("outputs/my-model")


def test_cached_hub_ids_are_found(cache: Path) -> None:
    assert not hub_model_cached("org/model")
    _cache_model(cache, "org/model")
    assert hub_model_cached("org/model")
    assert not hub_model_cached("org/other")


@pytest.mark.parametrize("name", ["not a//valid id", "a" * 300, "org/model/extra/parts"])
def test_an_invalid_repo_id_is_not_cached_and_raises_nothing(cache: Path, name: str) -> None:
    assert hub_model_cached(name) is False


def test_offline_uncached_hub_id_is_one_line(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    problem = offline_model_problem("nobody/no-such-model", "Model", "--model", "LLAMA_UNSLOTH_MODEL")
    assert problem == MESSAGE and "\n" not in problem
    embed = offline_model_problem("BAAI/bge-base-en", "Embedding model", "--embed-model", "LLAMA_UNSLOTH_EMBED_MODEL")
    assert embed is not None and embed.startswith("Embedding model 'BAAI/bge-base-en' is not found locally")
    assert embed.endswith("(--embed-model path/to/model) or set LLAMA_UNSLOTH_EMBED_MODEL=path/to/model.")


def test_no_problem_for_defaults_folders_cached_ids_or_online(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("Model", "--model", "LLAMA_UNSLOTH_MODEL")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert offline_model_problem(None, *args) is None  # the bundled default
    assert offline_model_problem("", *args) is None
    assert offline_model_problem(str(tmp_path), *args) is None
    assert offline_model_problem("./not/yet/trained", *args) is None  # a path: the loader names what is missing
    _cache_model(cache, "org/cached")
    assert offline_model_problem("org/cached", *args) is None
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert offline_model_problem("nobody/no-such-model", *args) is None  # online: the hub may have it
