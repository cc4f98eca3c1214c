"""The Unsloth backend on a real GPU: 4-bit loading through FastLanguageModel, answering through a query engine.

Runs on the GPU machine only (``make test-gpu``). The model is any Llama-architecture checkpoint named by
``LLAMA_UNSLOTH_GPU_MODEL`` (a random-weight one is enough: this proves the plumbing, not quality).
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_model_name() -> str:
    name = os.environ.get("LLAMA_UNSLOTH_GPU_MODEL")
    if not name:
        pytest.skip("set LLAMA_UNSLOTH_GPU_MODEL to a model folder or hub id")
    return name


@pytest.fixture(scope="module")
def unsloth_llm(gpu_model_name: str):
    from llama_unsloth import UnslothLLM

    return UnslothLLM(
        model_name=gpu_model_name, backend="unsloth", prompt_format="alpaca-context", max_new_tokens=24,
        max_seq_length=2048, generate_kwargs={"min_new_tokens": 8},
    )


def test_unsloth_backend_loads_4bit_through_fastlanguagemodel(unsloth_llm) -> None:
    import torch

    assert unsloth_llm.backend_name == "unsloth"
    assert "unsloth" in type(unsloth_llm.model).__module__.lower() or hasattr(unsloth_llm.model, "max_seq_length")
    linear_types = {type(m).__name__ for m in unsloth_llm.model.modules()}
    assert "Linear4bit" in linear_types
    assert next(unsloth_llm.model.parameters()).device.type == "cuda"
    assert torch.cuda.memory_allocated() > 0


def test_unsloth_batch_equals_sequential(unsloth_llm) -> None:
    questions = ["What is a customs union?", "Name a trade bloc in South America.", "Why do rules of origin matter?"]
    sequential = [unsloth_llm.complete(q).text for q in questions]
    batched = [r.text for r in unsloth_llm.complete_batch(questions, batch_size=3)]
    # 4-bit kernels on a GPU are not bit-exact across batch shapes; the first tokens must agree.
    assert [s[:12] for s in sequential] == [b[:12] for b in batched]


def test_unsloth_answers_through_a_query_engine(unsloth_llm, recorded_prompts: list) -> None:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    documents = [
        Document(text="Mercosur was created in 1991 by the Treaty of Asuncion."),
        Document(text="ASEAN's economic community aims at a single market and production base."),
    ]
    index = VectorStoreIndex.from_documents(documents, embed_model=MockEmbedding(embed_dim=8))
    engine = index.as_query_engine(llm=unsloth_llm, similarity_top_k=2, text_qa_template=unsloth_llm.qa_template())
    response = engine.query("Which treaty created Mercosur?")
    assert str(response).strip()
    assert len(recorded_prompts) == 1
    assert "Treaty of Asuncion" in recorded_prompts[0]
    assert recorded_prompts[0].endswith("### Response:\n")
