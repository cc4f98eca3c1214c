"""llama_unsloth.models.embeddings: an embedding model named by what it is (name, fingerprint), not where it lies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def copy_model(source: Path, target: Path) -> Path:
    """The model folder copied elsewhere: the same model at another path (a re-created venv, a re-clone)."""
    shutil.copytree(source, target)
    return target


def change_one_weight(folder: Path) -> Path:
    """Flips the low byte of the last float in the weights: a different model that still loads (and nearly agrees)."""
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4] ^= 0x01
    weights.write_bytes(bytes(data))
    return folder


def retrained_model(source: Path, target: Path, seed: int = 0) -> Path:
    """A copy whose word embeddings are shifted by noise: a really different model (other vectors), same dimension."""
    import torch
    from safetensors.torch import load_file, save_file

    copy_model(source, target)
    state = load_file(str(target / "model.safetensors"))
    key = next(k for k in state if "word_embeddings" in k)
    generator = torch.Generator().manual_seed(seed)
    state[key] = state[key] + torch.randn(state[key].shape, generator=generator) * state[key].std() * 2
    save_file(state, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


def test_the_same_files_anywhere_have_one_fingerprint(minilm_path: Path, tmp_path: Path) -> None:
    from llama_unsloth.models.embeddings import folder_fingerprint, model_files

    names = [p.relative_to(minilm_path).as_posix() for p in model_files(minilm_path)]
    assert "model.safetensors" in names and "config.json" in names and "1_Pooling/config.json" in names
    assert "README.md" not in names and ".gitattributes" not in names
    original = folder_fingerprint(minilm_path)
    assert original is not None and original.startswith("sha256:") and len(original) == 7 + 64
    moved = copy_model(minilm_path, tmp_path / "elsewhere" / "all-MiniLM-L6-v2")
    (moved / "README.md").write_text("my notes\n", encoding="utf-8")  # what the model is not
    (moved / "onnx").mkdir()
    (moved / "onnx" / "model.onnx").write_bytes(b"another runtime's copy")
    assert folder_fingerprint(moved) == original
    assert folder_fingerprint(change_one_weight(moved)) != original
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "config.json").write_text("{}", encoding="utf-8")
    assert folder_fingerprint(tmp_path / "notes") is None  # no weights: no model, no fingerprint


def test_each_file_is_hashed_once_by_path_mtime_and_size(
    minilm_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_unsloth.models import embeddings

    monkeypatch.setenv("LLAMA_UNSLOTH_CACHE", str(tmp_path / "cache"))
    moved = copy_model(minilm_path, tmp_path / "m")
    first = embeddings.folder_fingerprint(moved)
    assert (tmp_path / "cache" / "file-hashes.json").is_file()
    # Another process: the memory cache is empty, the file cache answers; nothing is read again.
    monkeypatch.setattr(embeddings, "_file_hashes", {})
    monkeypatch.setattr(embeddings, "_sha256_of", lambda file: pytest.fail(f"hashed {file} again"))
    assert embeddings.folder_fingerprint(moved) == first
    # A changed file (other mtime and contents) is read again.
    monkeypatch.undo()
    monkeypatch.setenv("LLAMA_UNSLOTH_CACHE", str(tmp_path / "cache"))
    assert embeddings.folder_fingerprint(change_one_weight(moved)) != first


def test_names_say_what_the_model_is(minilm_path: Path, tmp_path: Path) -> None:
    from llama_index.core import MockEmbedding

    from llama_unsloth.models import embed_fingerprint, embed_model_id, embed_model_name, huggingface_embedding
    from tests.recipes._helpers import embed_model

    bundled = embed_model()
    assert embed_model_id(bundled) == str(minilm_path.resolve())  # where it lies
    assert embed_model_name(bundled) == f"{minilm_path.parent.name}/model"  # what it is called
    moved = huggingface_embedding(str(copy_model(minilm_path, tmp_path / "all-MiniLM-L6-v2")))
    assert embed_model_name(moved) == "all-MiniLM-L6-v2"
    assert embed_fingerprint(moved) == embed_fingerprint(bundled)
    assert embed_fingerprint(MockEmbedding(embed_dim=8)) is None  # nothing local says what it is


def test_a_cohere_model_is_its_name() -> None:
    from llama_unsloth.models.embeddings import embed_fingerprint, embed_model_name

    class CohereEmbedding:  # the class name is what identifies Cohere embeddings
        model_name = "embed-multilingual-v3.0"

    assert embed_fingerprint(CohereEmbedding()) == "cohere:embed-multilingual-v3.0"
    assert embed_model_name(CohereEmbedding()) == "embed-multilingual-v3.0"
