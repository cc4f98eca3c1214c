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
        model_name=gpu_model_name,
        backend="unsloth",
        prompt_format="alpaca-context",
        max_new_tokens=24,
        max_seq_length=2048,
        generate_kwargs={"min_new_tokens": 8},
        # The GPU machine has no network for tiktoken's encoding file, LlamaIndex's default counter.
        set_global_tokenizer=True,
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
    # 4-bit kernels on a GPU are not bit-exact across batch shapes, and random weights make near-ties common
    # (seen: one of three answers differing from its first token). A padding or position bug changes the
    # padded answers entirely, so most must agree on their first characters.
    agree = [s[:6] == b[:6] for s, b in zip(sequential, batched)]
    assert sum(agree) >= 2, (sequential, batched)


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


def test_unsloth_backend_answers_through_a_zero_config_engine(unsloth_llm, generated: list) -> None:
    """Only ``Settings.llm`` is set: LlamaIndex's default QA prompt is replaced by the trained layout."""
    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    saved = (Settings._llm, Settings._embed_model)
    try:
        Settings.llm, Settings.embed_model = unsloth_llm, MockEmbedding(embed_dim=8)
        index = VectorStoreIndex.from_documents(
            [Document(text="Mercosur was created in 1991 by the Treaty of Asuncion.")]
        )
        response = index.as_query_engine().query("Which treaty created Mercosur?")
        chat = index.as_chat_engine(chat_mode="context").chat("Which treaty created Mercosur?")
    finally:
        Settings._llm, Settings._embed_model = saved
    assert str(response).strip() and str(chat).strip()
    assert len(generated) == 2
    for prompt in generated:
        assert "Context information is below" not in prompt and "Use the context information below" not in prompt
        assert "### Context:\nMercosur was created in 1991 by the Treaty of Asuncion." in prompt
        assert prompt.rstrip().endswith("### Response:")


def test_unsloth_trainer_sees_the_inference_ids_for_every_layout(gpu_model_name: str, tmp_path) -> None:
    """On the Unsloth backend too: the ids the trainer gets up to the answer are the ids generate receives."""
    import json
    from pathlib import Path

    from llama_unsloth import training as T
    from llama_unsloth.layouts import BUILTIN_FORMATS, PromptFormat, encode_prompt
    from llama_unsloth.models import load_model

    model, tokenizer, backend = load_model(gpu_model_name, backend="unsloth", max_seq_length=1024, for_training=True)
    assert backend == "unsloth"
    from llama_unsloth.training.arguments import FinetuneSFTConfig, LoraModelConfig

    model = T.add_lora(model, backend, LoraModelConfig(), max_seq_length=1024)
    examples = Path(__file__).resolve().parents[2] / "examples" / "templates"
    layouts = [PromptFormat.get(name) for name in sorted(BUILTIN_FORMATS)] + [
        PromptFormat.get(str(examples / "alpaca_dont_know.txt"), fields=["instruction", "input", "output"]),
        PromptFormat.get(str(examples / "alpaca_rag_inference.txt"), fields=["instruction", "input", "context"]),
        PromptFormat.get(str(examples / "phi3_reasoning.j2")),
        PromptFormat.get(str(examples / "QA_finetune_Instruction_Context_new.j2")),
    ]
    record = {
        "instruction": "Which treaty created Mercosur?",
        "input": "",
        "context": "The Treaty of Asuncion.",
        "flag": "logician",
        "reasoning": "It is in the context.",
        "output": "Asuncion.",
        "answer": "Asuncion.",
    }
    data = tmp_path / "d.json"
    data.write_text(json.dumps([record] * 2), encoding="utf-8")
    for fmt in layouts:
        dataset = T.to_text_dataset(data, fmt, tokenizer, 1024)
        args = FinetuneSFTConfig(output_dir=str(tmp_path / fmt.name), max_steps=1, max_length=1024)
        trainer = T.build_trainer(model, tokenizer, dataset, args, backend)
        ids = list(trainer.train_dataset[0]["input_ids"])
        context = record["context"] if fmt.is_chat or fmt.context_var in ("context", "str_context") else ""
        prompt_ids = encode_prompt(
            tokenizer, fmt.render_prompt(record["instruction"], context, flag="logician", tokenizer=tokenizer)
        )
        assert ids[: len(prompt_ids)] == prompt_ids, fmt.name
        if tokenizer.bos_token_id is not None:
            assert ids[:2] != [tokenizer.bos_token_id] * 2, fmt.name  # never a doubled BOS
