"""llama_unsloth.models.embeddings: an embedding model named by what it is (name, fingerprint), not where it lies."""

from __future__ import annotations

import shutil
from pathlib import Path


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
