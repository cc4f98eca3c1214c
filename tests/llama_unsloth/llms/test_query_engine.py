"""UnslothLLM inside LlamaIndex query engines: real Chroma, real MiniLM, SmolLM2 and the tiny Llama."""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from llama_unsloth import UnslothLLM

pytestmark = pytest.mark.slow


def _chroma_index(documents: list, folder: Path, minilm_path: Path) -> object:
    import chromadb
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.chroma import ChromaVectorStore

    client = chromadb.PersistentClient(path=str(folder))
    store = ChromaVectorStore(chroma_collection=client.get_or_create_collection("docs"))
    return VectorStoreIndex.from_documents(
        documents,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=HuggingFaceEmbedding(model_name=str(minilm_path)),
        transformations=[SentenceSplitter(chunk_size=512, chunk_overlap=32)],
    )


def test_query_engine_puts_retrieved_text_in_the_models_layout(
    smollm2_path: Path, minilm_path: Path, tmp_path: Path, recorded_prompts: List[str]
) -> None:
    from llama_index.core import SimpleDirectoryReader

    corpus = Path(__file__).resolve().parents[3] / "llama_unsloth" / "data" / "corpus"
    index = _chroma_index(SimpleDirectoryReader(str(corpus)).load_data(), tmp_path / "chroma", minilm_path)
    llm = UnslothLLM(model_name=str(smollm2_path), load_in_4bit=False, max_new_tokens=48, prompt_format="chat")
    engine = index.as_query_engine(llm=llm, similarity_top_k=2, text_qa_template=llm.qa_template())
    response = engine.query("Which treaty created Mercosur?")

    assert str(response).strip()
    assert len(recorded_prompts) == 1
    prompt = recorded_prompts[0]
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith("\n\nQuestion: Which treaty created Mercosur?<|im_end|>\n<|im_start|>assistant\n")
    for source in response.source_nodes:
        assert source.node.get_content()[:200] in prompt
    assert any("mercosur" in s.node.metadata["file_name"] for s in response.source_nodes)


@pytest.mark.timeout(400)
def test_threads_share_one_query_engine_and_get_single_threaded_answers(
    tiny_llama_path: Path, minilm_path: Path, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from llama_index.core import SimpleDirectoryReader
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from postprocessors import ContextCleaner, DuplicateChunkFilter, POVReranker

    data = Path(__file__).resolve().parents[3] / "llama_unsloth" / "data"
    index = _chroma_index(SimpleDirectoryReader(str(data / "corpus")).load_data(), tmp_path / "chroma", minilm_path)
    llm = UnslothLLM(
        model_name=str(tiny_llama_path), load_in_4bit=False, max_new_tokens=8, prompt_format="alpaca-context"
    )
    rerank = POVReranker.from_file(
        data / "povs.txt", embed_model=HuggingFaceEmbedding(model_name=str(minilm_path)), query_top_n=6, top_n=3
    )
    engine = index.as_query_engine(
        llm=llm,
        similarity_top_k=8,
        node_postprocessors=[DuplicateChunkFilter(), rerank, ContextCleaner()],
        text_qa_template=llm.qa_template(),
        refine_template=llm.refine_template(),
    )
    questions = [q for q in (data / "questions.txt").read_text(encoding="utf-8").splitlines() if q.strip()][:5]
    expected = {q: str(engine.query(q)) for q in questions}
    assert len(set(expected.values())) > 1

    def ask(job: int) -> tuple:
        question = questions[job % len(questions)]
        return question, str(engine.query(question))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(ask, range(8 * 5)))
    assert len(results) == 40
    assert all(answer == expected[question] for question, answer in results)
