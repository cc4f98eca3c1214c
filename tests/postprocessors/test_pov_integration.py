"""End to end: Chroma + MiniLM + query engine with [DuplicateChunkFilter, POVReranker, ContextCleaner]."""

from __future__ import annotations

import numpy as np
import pytest
from llama_index.core.schema import TextNode

from postprocessors import ContextCleaner, DuplicateChunkFilter, POVReranker
from postprocessors.context_cleaner import clean_text

pytestmark = pytest.mark.slow

QUERY = "What limits trade inside the bloc?"
POVS = [
    "Sanctions reshaped energy trade.",
    "Tariffs and quotas protect local industry.",
    "Sanctions reshaped energy trade.",  # duplicate on purpose
]
DUP_HEAD = "## **Energy** trade inside the bloc after the sanctions: pipelines, "
CHUNKS = [
    DUP_HEAD + "LNG terminals and long-term gas contracts were renegotiated in 2023.",
    DUP_HEAD + "and the refinery closures that followed in the northern member states.",
    "# Customs union\nTrade inside the bloc is limited by **non-tariff barriers** such as "
    "diverging product standards and national licensing rules.\n\n\n\nMember states still check goods.",
    "Quotas on steel imports protect local industry and limit trade between members.",
    "Sanctions on oil exports reshaped energy trade routes across the continent.",
    "## Agriculture\nFarm subsidies distort **trade** in grain inside the bloc.",
    "Energy prices rose sharply after sanctions cut pipeline gas deliveries.",
    "Tariffs on cars imported from outside the bloc protect local manufacturers.",
    "The bloc's single market allows free movement of goods, services and capital.",
    "Border controls and paperwork slow down trucks at internal frontiers.",
    "Digital services trade is limited by different data protection rules.",
    "A common external tariff applies to all goods entering the customs union.",
    "Public procurement rules favour national suppliers and limit cross-border bids.",
    "Currency differences between members add costs to trade inside the bloc.",
    "Fishing quotas are negotiated every year between member states.",
    "The court of justice strikes down national rules that restrict trade.",
    "Rail freight across the bloc is slowed by different signalling systems.",
    "Tourism recovered quickly after the pandemic in southern member states.",
    "The central bank raised interest rates to fight inflation.",
    "A recipe for apple pie needs flour, butter, apples and sugar.",
]


@pytest.fixture
def chroma_index(tmp_path, minilm_embedding):
    chromadb = pytest.importorskip("chromadb")
    from chromadb.config import Settings
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore

    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"), settings=Settings(anonymized_telemetry=False))
    collection = client.get_or_create_collection("trade")
    store = ChromaVectorStore(chroma_collection=collection)
    nodes = [TextNode(text=t, id_=f"c{i:02d}", metadata={"doc": "trade.md"}) for i, t in enumerate(CHUNKS)]
    index = VectorStoreIndex(
        nodes,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=minilm_embedding,
    )
    return index


def test_query_engine_prompt_holds_top_n_cleaned_chunks_in_pov_order(
    chroma_index, minilm_embedding, recording_llm, spec_reference
):
    top_n = 5
    rerank = POVReranker(embed_model=minilm_embedding, povs=POVS, query_top_n=10, top_n=top_n)
    engine = chroma_index.as_query_engine(
        llm=recording_llm,
        similarity_top_k=15,
        node_postprocessors=[DuplicateChunkFilter(), rerank, ContextCleaner()],
    )
    response = engine.query(QUERY)
    assert str(response) == "recorded answer"
    assert len(recording_llm.prompts) == 1
    prompt = recording_llm.prompts[0]

    # Expected: the same retrieval, de-duplicated, ranked by the plain reference algorithm.
    retrieved = chroma_index.as_retriever(similarity_top_k=15).retrieve(QUERY)
    retrieved_texts = [n.node.get_content() for n in retrieved]
    assert CHUNKS[0] in retrieved_texts and CHUNKS[1] in retrieved_texts  # duplicate pair retrieved
    first, dropped = sorted(CHUNKS[:2], key=retrieved_texts.index)
    deduped = [t for t in retrieved_texts if t != dropped]
    expected = spec_reference(
        minilm_embedding.get_text_embedding_batch(deduped),
        minilm_embedding.get_query_embedding(QUERY),
        [minilm_embedding.get_query_embedding(p) for p in dict.fromkeys(POVS)],
        10,
        top_n,
    )
    expected_texts = [clean_text(deduped[i]) for i, _ in expected]
    query_order = sorted(
        range(len(deduped)),
        key=lambda i: (
            -float(
                np.dot(minilm_embedding.get_text_embedding(deduped[i]), minilm_embedding.get_query_embedding(QUERY))
            )
        ),
    )
    assert [i for i, _ in expected] != query_order[:top_n]  # the POV stage changes the order

    # source nodes: POV order, POV scores, cleaned copies
    assert [n.node.get_content() for n in response.source_nodes] == expected_texts
    assert [n.score for n in response.source_nodes] == pytest.approx([r for _, r in expected], abs=1e-5)
    assert all("pov_score" in n.node.metadata for n in response.source_nodes)

    # the prompt: exactly top_n chunks, in that order, cleaned, no duplicate, no scores
    assert prompt.count("doc: trade.md") == top_n
    positions = [prompt.find(t) for t in expected_texts]
    assert all(p >= 0 for p in positions) and positions == sorted(positions)
    for text in deduped:
        if clean_text(text) not in expected_texts:
            assert clean_text(text) not in prompt
    assert clean_text(first) in prompt or clean_text(first) not in expected_texts
    assert dropped[len(DUP_HEAD) :] not in prompt  # the dropped duplicate's tail
    # The users' clean-up (SPEC.md): "**" and "##" removed, so a "### Heading" keeps one "#".
    assert "**" not in prompt and "##" not in prompt
    assert "\n\n\n" not in clean_text(CHUNKS[2])
    for key in ("pov_score", "query_similarity", "pov_similarities"):
        assert key not in prompt

    # stored chunks untouched (Chroma still returns the raw markdown)
    again = chroma_index.as_retriever(similarity_top_k=len(CHUNKS)).retrieve(QUERY)
    assert sorted(n.node.get_content() for n in again) == sorted(CHUNKS)
    assert all(set(n.node.metadata) == {"doc"} for n in again)


def test_second_query_reuses_cached_chunk_embeddings(chroma_index, minilm_embedding, recording_llm):
    rerank = POVReranker(embed_model=minilm_embedding, povs=POVS, query_top_n=10, top_n=5)
    dedupe = DuplicateChunkFilter()
    engine = chroma_index.as_query_engine(llm=recording_llm, similarity_top_k=15, node_postprocessors=[dedupe, rerank])
    retriever = chroma_index.as_retriever(similarity_top_k=15)

    def seen_texts(query):
        return {n.node.get_content() for n in dedupe.postprocess_nodes(retriever.retrieve(query))}

    queries = [QUERY, QUERY, "Which barriers limit trade inside the bloc?"]
    engine.query(queries[0])
    info = rerank.cache_info()
    assert info["misses"] == 14 and info["hits"] == 0  # 15 retrieved, 1 duplicate dropped
    seen = seen_texts(queries[0])
    for query in queries[1:]:
        before = rerank.cache_info()
        engine.query(query)
        after = rerank.cache_info()
        texts = seen_texts(query)
        assert after["misses"] - before["misses"] == len(texts - seen)  # only unseen chunks embedded
        assert after["hits"] - before["hits"] == len(texts & seen)
        seen |= texts
