"""llama_unsloth.models.fingerprints: a model folder named by what it holds, each file hashed once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.llama_unsloth.models.test_embeddings import change_one_weight, copy_model


def test_the_same_files_anywhere_have_one_fingerprint(minilm_path: Path, tmp_path: Path) -> None:
    from llama_unsloth.models.fingerprints import folder_fingerprint, model_files

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
    from llama_unsloth.models import embeddings, fingerprints

    monkeypatch.setenv("LLAMA_UNSLOTH_CACHE", str(tmp_path / "cache"))
    moved = copy_model(minilm_path, tmp_path / "m")
    first = embeddings.folder_fingerprint(moved)
    assert (tmp_path / "cache" / "file-hashes.json").is_file()
    # Another process: the memory cache is empty, the file cache answers; nothing is read again.
    monkeypatch.setattr(fingerprints, "_file_hashes", {})
    monkeypatch.setattr(fingerprints, "_sha256_of", lambda file: pytest.fail(f"hashed {file} again"))
    assert embeddings.folder_fingerprint(moved) == first
    # A changed file (other mtime and contents) is read again.
    monkeypatch.undo()
    monkeypatch.setenv("LLAMA_UNSLOTH_CACHE", str(tmp_path / "cache"))
    assert embeddings.folder_fingerprint(change_one_weight(moved)) != first
