"""Zero-config: with only ``Settings.llm = UnslothLLM(...)``, every LlamaIndex surface prompts in the layout.

Prompts are read where they reach the model: the token ids handed to ``generate``, decoded (the
``generated`` fixture of tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import weakref
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from llama_unsloth import UnslothLLM

pytestmark = pytest.mark.slow

# The users' instruction-context layout, verbatim (QA_finetune_Instruction_Context_new.j2).
J2 = Path(__file__).resolve().parents[3] / "examples" / "templates" / "QA_finetune_Instruction_Context_new.j2"
HEAD = "You are a brilliant Iranian professor of political science. Below is an instruction"
TAIL = "\n\n### RESPONSE:\n"
LLAMA_INDEX_TEXTS = (
    "Context information is below",
    "Given the context information",
    "Use the context information below",
    "The following is a friendly conversation",
    "Given a conversation (between Human and Assistant)",
    "rephrase the follow up question",
    "system: ",
)
DOCS = [
    "Mercosur was created by the Treaty of Asuncion in 1991 by Argentina, Brazil, Paraguay and Uruguay.",
    "ECOWAS is the Economic Community of West African States, founded by the Treaty of Lagos in 1975.",
    "Rules of origin decide which goods count as made inside a free trade area.",
]


@pytest.fixture
def prompt_texts(monkeypatch: pytest.MonkeyPatch) -> Iterator[List[str]]:
    """Every prompt text an UnslothLLM tokenizes for generation (for tokenizers whose decoding is lossy)."""
    texts: List[str] = []
    real = UnslothLLM._response

    def record(self: UnslothLLM, prompt: str, *args: Any) -> Any:
        texts.append(prompt)
        return real(self, prompt, *args)

    monkeypatch.setattr(UnslothLLM, "_response", record)
    yield texts


@pytest.fixture(scope="module")
def minilm(minilm_path: Path) -> Any:
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    return HuggingFaceEmbedding(model_name=str(minilm_path))


@pytest.fixture
def zero_config(tiny_llama_path: Path, minilm: Any) -> Iterator[Any]:
    """``Settings.llm`` = an UnslothLLM in the users' .j2 layout, ``Settings.embed_model`` = MiniLM, and an index."""
    from llama_index.core import Document, Settings, VectorStoreIndex

    llm = UnslothLLM(
        model_name=str(tiny_llama_path),
        backend="transformers",
        load_in_4bit=False,
        max_new_tokens=6,
        prompt_format=str(J2),
    )
    saved = (Settings._llm, Settings._embed_model)
    Settings.llm, Settings.embed_model = llm, minilm
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
    yield index
    Settings._llm, Settings._embed_model = saved


def assert_in_layout(prompt: str) -> None:
    assert prompt.startswith(HEAD), prompt[:200]
    assert prompt.endswith(TAIL), prompt[-200:]
    assert "\n\n### INSTRUCTION:\n" in prompt and "\n\n### CONTEXT:\n" in prompt
    for text in LLAMA_INDEX_TEXTS:
        assert text not in prompt, text


def context_of(prompt: str) -> str:
    return prompt.split("\n\n### CONTEXT:\n", 1)[1].rsplit(TAIL, 1)[0]


@pytest.mark.parametrize(
    "mode", ["compact", "refine", "tree_summarize", "simple_summarize", "accumulate", "compact_accumulate"]
)
def test_query_engine_in_every_response_mode_prompts_in_the_layout(
    zero_config: Any, generated: List[str], mode: str
) -> None:
    response = zero_config.as_query_engine(response_mode=mode, similarity_top_k=2).query(
        "Which treaty created Mercosur?"
    )
    assert generated, "the model was never called"
    for prompt in generated:
        assert_in_layout(prompt)
        assert "Which treaty created Mercosur?" in prompt.split("\n\n### CONTEXT:\n")[0]
    # The retrieved text sits in the context slot.
    contexts = "\n".join(context_of(p) for p in generated)
    for node in response.source_nodes:
        assert node.node.get_content() in contexts


def test_streaming_async_and_retriever_query_engine_prompt_in_the_layout(
    zero_config: Any, generated: List[str]
) -> None:
    from llama_index.core.query_engine import RetrieverQueryEngine

    streamed = zero_config.as_query_engine(streaming=True, similarity_top_k=2).query("Which treaty created ECOWAS?")
    text = "".join(streamed.response_gen)
    assert len(generated) == 1
    assert_in_layout(generated[-1])
    asynced = asyncio.run(zero_config.as_query_engine(similarity_top_k=2).aquery("Which treaty created ECOWAS?"))
    assert len(generated) == 2 and generated[1] == generated[0]
    assert str(asynced) == text.strip() or str(asynced).startswith(text.strip()[:5])
    RetrieverQueryEngine.from_args(zero_config.as_retriever(similarity_top_k=2)).query("What are rules of origin?")
    assert len(generated) == 3
    assert_in_layout(generated[-1])


@pytest.mark.parametrize("mode", ["simple", "condense_question", "context", "condense_plus_context", "best"])
def test_chat_engines_in_every_mode_prompt_in_the_layout(zero_config: Any, generated: List[str], mode: str) -> None:
    engine = zero_config.as_chat_engine(chat_mode=mode, similarity_top_k=2)
    engine.chat("Which treaty created Mercosur?")
    first = len(generated)
    engine.chat("Which treaty created ECOWAS?")
    assert first >= 1 and len(generated) > first
    for prompt in generated:
        assert_in_layout(prompt)
    # The earlier turn reaches the model on the second turn (as conversation or as condensed history).
    assert any("Which treaty created Mercosur?" in p for p in generated[first:])
    if mode in ("context", "condense_plus_context", "best"):
        assert any(doc in context_of(p) for p in generated[first:] for doc in DOCS)


def test_predict_stream_and_explicit_templates(zero_config: Any, generated: List[str]) -> None:
    from llama_index.core import Settings
    from llama_index.core.prompts import PromptTemplate

    llm = Settings.llm
    llm.predict(PromptTemplate("Name a trade bloc in {region}."), region="South America")
    assert generated[-1] == llm.format_prompt("Name a trade bloc in South America.")
    "".join(llm.stream(PromptTemplate("Name a trade bloc in {region}."), region="Africa"))
    assert generated[-1] == llm.format_prompt("Name a trade bloc in Africa.")
    # A template the user passes is honoured as given (inside the layout's instruction slot) ...
    custom = PromptTemplate("CUSTOM PROMPT. Facts: {context_str}\nQuestion: {query_str}")
    zero_config.as_query_engine(text_qa_template=custom, similarity_top_k=1).query("Which treaty created Mercosur?")
    assert_in_layout(generated[-1])
    assert "CUSTOM PROMPT. Facts: " in generated[-1].split("\n\n### CONTEXT:\n")[0]
    # ... and the layout's own templates are sent exactly as they render.
    qa = llm.qa_template()
    response = zero_config.as_query_engine(text_qa_template=qa, similarity_top_k=1).query(
        "Which treaty created Mercosur?"
    )
    assert generated[-1] == qa.format(
        query_str="Which treaty created Mercosur?", context_str=response.source_nodes[0].node.get_content()
    )
    # A prompt already in the layout, passed unformatted, is not wrapped a second time.
    laid_out = llm.format_prompt("Q?", "C.")
    llm.complete(laid_out)
    assert generated[-1] == laid_out


def test_token_counting_sees_one_event_per_generation_with_the_ids_fed(zero_config: Any, generated: List[str]) -> None:
    from llama_index.core import Settings
    from llama_index.core.callbacks import CallbackManager, TokenCountingHandler

    llm = Settings.llm
    counter = TokenCountingHandler()
    saved = Settings._callback_manager
    Settings.callback_manager = llm.callback_manager = CallbackManager([counter])
    engine = zero_config.as_query_engine(similarity_top_k=2)
    engine.query("Which treaty created Mercosur?")
    asyncio.run(engine.aquery("Which treaty created Mercosur?"))
    from llama_index.core.llms import ChatMessage

    llm.chat([ChatMessage(role="user", content="Hello?")])
    asyncio.run(llm.achat([ChatMessage(role="user", content="Hello?")]))
    llm.complete("What is a customs union?")
    Settings._callback_manager = saved
    assert len(counter.llm_token_counts) == len(generated) == 5
    for event, prompt in zip(counter.llm_token_counts, generated):
        fed = llm._encode(prompt)
        assert event.prompt_token_count == len(fed)
        assert 1 <= event.completion_token_count <= llm.max_new_tokens


# ------------------------------------------------------------------------------------------------ counting per model
def _numeric_tables(count: int) -> list:
    """Trade-statistics tables: digits cost these tokenizers far more tokens than tiktoken counts."""
    from llama_index.core import Document

    rng = random.Random(0)
    documents = []
    for number in range(count):
        rows = [
            f"bloc {number} year {2000 + y}: " + " ".join(str(rng.randrange(10**6, 10**7)) for _ in range(8))
            for y in range(12)
        ]
        documents.append(Document(text="\n".join(rows), metadata={"table": number}))
    return documents


@pytest.fixture(scope="module")
def wordpiece_llama_path(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """A random 2-layer Llama with MiniLM's WordPiece tokenizer: a second, very different tokenizer."""
    from transformers import AutoTokenizer

    from tests.tiny_models import save_tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    tokenizer.bos_token, tokenizer.eos_token = "[CLS]", "[SEP]"
    return save_tiny_llama(tokenizer, tmp_path_factory.mktemp("wordpiece-llama"))


def test_two_models_each_pack_context_that_fits_their_own_window(
    tiny_llama_path: Path,
    wordpiece_llama_path: Path,
    minilm: Any,
    prompt_texts: List[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import llama_index.core
    from llama_index.core import Settings, VectorStoreIndex

    before = (llama_index.core.global_tokenizer, Settings._tokenizer)
    index = VectorStoreIndex.from_documents(_numeric_tables(10), embed_model=minilm)
    llms = [
        UnslothLLM(
            model_name=str(path),
            backend="transformers",
            load_in_4bit=False,
            max_seq_length=1024,
            max_new_tokens=8,
            prompt_format="alpaca-context",
        )
        for path in (tiny_llama_path, wordpiece_llama_path)
    ]
    # Loading models does not change how LlamaIndex (or any other LLM) counts.
    assert (llama_index.core.global_tokenizer, Settings._tokenizer) == before
    assert llms[0]._encode("1234567 7654321") != llms[1]._encode("1234567 7654321")
    question = "Which bloc had the largest exports in 2005?"
    with caplog.at_level(logging.WARNING):
        for llm in llms:
            prompt_texts.clear()
            response = index.as_query_engine(llm=llm, similarity_top_k=10).query(question)
            assert len(response.source_nodes) == 10
            assert len(prompt_texts) > 1  # the context really was too large for one call
            for prompt in prompt_texts:
                assert len(llm._encode(prompt)) + llm.max_new_tokens <= llm.max_seq_length
                assert "### Context:\n" in prompt and prompt.endswith("### Response:\n")
            # Nothing dropped: every retrieved table's every row reached the model.
            seen = " ".join(" ".join(p.split()) for p in prompt_texts)
            for node in response.source_nodes:
                for row in node.node.get_content().splitlines():
                    assert " ".join(row.split()) in seen, row[:40]
    assert not [r for r in caplog.records if "exceeds max_seq_length" in r.getMessage()]


def test_no_global_keeps_a_model_alive(tiny_llama_path: Path, zero_config: Any) -> None:
    from llama_index.core import Settings

    llm = UnslothLLM(
        model_name=str(tiny_llama_path),
        backend="transformers",
        load_in_4bit=False,
        max_new_tokens=4,
        set_global_tokenizer=True,
    )
    zero_config.as_query_engine(llm=llm, similarity_top_k=1).query("Which treaty created Mercosur?")
    assert Settings.tokenizer("1991") == llm.tokenizer.encode("1991", add_special_tokens=False)
    model_ref = weakref.ref(llm.model)
    del llm
    gc.collect()
    assert model_ref() is None


def test_objects_built_with_a_deleted_models_tokenizer_count_with_the_next_one(
    tiny_llama_path: Path, smollm2_path: Path
) -> None:
    """Settings.node_parser caches the token counter it was built with: after the first model is gone and a
    second one set the global tokenizer, indexing still works (seen on the GPU: one model per test)."""
    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    saved = (Settings._node_parser, Settings._embed_model)
    try:
        Settings._node_parser, Settings.embed_model = None, MockEmbedding(embed_dim=8)
        first = UnslothLLM(
            model_name=str(tiny_llama_path), backend="transformers", load_in_4bit=False, set_global_tokenizer=True
        )
        VectorStoreIndex.from_documents([Document(text="Mercosur was created in 1991.")])  # builds the node parser
        del first
        gc.collect()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        second = UnslothLLM(
            model_name=str(tiny_llama_path),
            backend="transformers",
            load_in_4bit=False,
            set_global_tokenizer=True,
            tokenizer=AutoTokenizer.from_pretrained(smollm2_path),
            model=AutoModelForCausalLM.from_pretrained(tiny_llama_path),
        )
        index = VectorStoreIndex.from_documents([Document(text="ASEAN aims at a single market.")])
        assert len(index.docstore.docs) == 1
        assert Settings.node_parser._tokenizer("single market") == second.tokenizer.encode(
            "single market", add_special_tokens=False
        )
    finally:
        Settings._node_parser, Settings._embed_model = saved


def test_explicit_template_with_too_much_context_is_split_not_dropped(
    tiny_llama_path: Path, minilm: Any, prompt_texts: List[str], caplog: pytest.LogCaptureFixture
) -> None:
    from llama_index.core import VectorStoreIndex
    from llama_index.core.prompts import PromptTemplate

    index = VectorStoreIndex.from_documents(_numeric_tables(6), embed_model=minilm)
    llm = UnslothLLM(
        model_name=str(tiny_llama_path),
        backend="transformers",
        load_in_4bit=False,
        max_seq_length=768,
        max_new_tokens=8,
        prompt_format="alpaca-context",
    )
    custom = PromptTemplate("Facts: {context_str}\nQ: {query_str}")
    with caplog.at_level(logging.WARNING):
        for streaming in (False, True):
            prompt_texts.clear()
            response = index.as_query_engine(
                llm=llm, similarity_top_k=6, text_qa_template=custom, streaming=streaming
            ).query("Which bloc?")
            if streaming:
                "".join(response.response_gen)
            assert len(prompt_texts) > 1
            seen = " ".join(" ".join(p.split()) for p in prompt_texts)
            for node in response.source_nodes:
                for row in node.node.get_content().splitlines():
                    assert " ".join(row.split()) in seen, row[:40]
            assert all(len(llm._encode(p)) + 8 <= 768 for p in prompt_texts)
    assert not [r for r in caplog.records if "tokens" in r.getMessage() and "exceeds" in r.getMessage()]


def test_structured_output_is_asked_in_the_layout(zero_config: Any, generated: List[str]) -> None:
    from pydantic import BaseModel

    class Treaty(BaseModel):
        treaty: str

    try:
        zero_config.as_query_engine(output_cls=Treaty, similarity_top_k=1).query("Which treaty created Mercosur?")
    except Exception:  # the random model writes no valid JSON; the prompt is what is checked
        pass
    assert generated
    assert_in_layout(generated[0])
    instruction = generated[0].split("\n\n### CONTEXT:\n")[0]
    assert "Which treaty created Mercosur?" in instruction and "JSON schema" in instruction
    assert DOCS[0] in context_of(generated[0])


def test_a_chat_engines_system_prompt_reaches_a_layout_without_a_system_slot(
    zero_config: Any, generated: List[str]
) -> None:
    engine = zero_config.as_chat_engine(chat_mode="simple", system_prompt="Answer in one word.")
    engine.chat("Which treaty created Mercosur?")
    assert_in_layout(generated[-1])
    instruction = generated[-1].split("\n\n### INSTRUCTION:\n", 1)[1].split("\n\n### CONTEXT:\n")[0]
    assert instruction == "Answer in one word.\n\nWhich treaty created Mercosur?"
