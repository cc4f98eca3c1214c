"""POVReranker: numerics against a plain numpy implementation of our users' algorithm, cache, edge cases."""

from __future__ import annotations

import asyncio
from typing import List, Sequence

import numpy as np
import pytest
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from postprocessors import POVReranker

KEYS = ("query_similarity", "pov_score", "pov_similarities")


def make_nodes(texts: Sequence[str]) -> List[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}", metadata={"src": f"f{i}.txt"}), score=0.5)
        for i, t in enumerate(texts)
    ]


def chunk_texts(n: int, prefix: str = "chunk") -> List[str]:
    return [f"{prefix} {i} text" for i in range(n)]


def pov_texts(m: int) -> List[str]:
    return [f"viewpoint {j}" for j in range(m)]


# --------------------------------------------------------------- numerics
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("query_top_n,top_n", [(10, 5), (15, 15), (4, 6), (1, 1), (12, 3)])
def test_matches_numpy_reference(seed, query_top_n, top_n, make_table_embedding, random_table, spec_reference):
    chunks, povs, query = chunk_texts(15), pov_texts(10), "the question"
    table = random_table(chunks + povs + [query], dim=16, seed=seed)
    rerank = POVReranker(embed_model=make_table_embedding(table), povs=povs, query_top_n=query_top_n, top_n=top_n)
    out = rerank.postprocess_nodes(make_nodes(chunks), query_str=query)

    expected = spec_reference([table[c] for c in chunks], table[query], [table[p] for p in povs], query_top_n, top_n)
    assert [n.node.get_content() for n in out] == [chunks[i] for i, _ in expected]
    np.testing.assert_allclose([n.score for n in out], [r for _, r in expected], rtol=1e-9)
    for n, (i, r) in zip(out, expected):
        q, d = table[query], table[chunks[i]]
        s = np.dot(q, d) / np.linalg.norm(q) / np.linalg.norm(d)
        assert n.node.metadata["query_similarity"] == pytest.approx(s)
        assert n.node.metadata["pov_score"] == pytest.approx(r)
        sims = [np.dot(d, table[p]) / np.linalg.norm(d) / np.linalg.norm(table[p]) for p in povs]
        np.testing.assert_allclose(n.node.metadata["pov_similarities"], sims, rtol=1e-9)


def test_ties_keep_retrieval_order(make_table_embedding):
    chunks = chunk_texts(6)
    table = {c: [1.0, 0.0] for c in chunks}
    table.update({"q": [1.0, 0.0], "p": [0.0, 1.0]})
    rerank = POVReranker(embed_model=make_table_embedding(table), povs=["p"], query_top_n=4, top_n=3)
    out = rerank.postprocess_nodes(make_nodes(chunks), query_str="q")
    assert [n.node.node_id for n in out] == ["n0", "n1", "n2"]


# --------------------------------------------------------------- cost / cache
def test_povs_embedded_once_and_chunks_cached(make_table_embedding, random_table):
    old, new = chunk_texts(15), chunk_texts(5, prefix="fresh")
    povs, queries = pov_texts(10), [f"question {k}" for k in range(4)]
    embed = make_table_embedding(random_table(old + new + povs + queries))
    rerank = POVReranker(embed_model=embed, povs=povs, query_top_n=10, top_n=5)
    assert embed.n_embedded == 0  # POVs are embedded lazily, on first use

    rerank.postprocess_nodes(make_nodes(old), query_str=queries[0])  # cold: 10 + 1 + 15
    assert embed.queries == povs + [queries[0]]
    assert embed.text_batches == [old]  # one batch for all chunks
    assert embed.n_embedded == 26

    embed.reset_counts()
    rerank.postprocess_nodes(make_nodes(old), query_str=queries[1])  # warm
    assert embed.queries == [queries[1]] and embed.text_batches == []
    assert embed.n_embedded == 1

    embed.reset_counts()
    mixed = old[:10] + new
    rerank.postprocess_nodes(make_nodes(mixed), query_str=queries[2])
    assert embed.queries == [queries[2]]
    assert embed.text_batches == [new]  # only the unseen chunks, in one batch
    assert rerank.cache_info()["size"] == 20


def test_cache_is_bounded_lru(make_table_embedding, random_table):
    chunks = chunk_texts(4)
    embed = make_table_embedding(random_table(chunks + ["q"]))
    rerank = POVReranker(embed_model=embed, povs=[], cache_size=3, query_top_n=4, top_n=4)
    rerank.postprocess_nodes(make_nodes(chunks[:3]), query_str="q")
    rerank.postprocess_nodes(make_nodes(chunks[:1]), query_str="q")  # chunk 0 most recent
    rerank.postprocess_nodes(make_nodes(chunks[3:]), query_str="q")  # evicts chunk 1
    assert rerank.cache_info()["size"] == 3
    embed.reset_counts()
    rerank.postprocess_nodes(make_nodes(chunks), query_str="q")
    assert embed.text_batches == [[chunks[1]]]


def test_cache_disabled(make_table_embedding, random_table):
    chunks = chunk_texts(3)
    embed = make_table_embedding(random_table(chunks + ["q"]))
    rerank = POVReranker(embed_model=embed, cache_size=0)
    for _ in range(2):
        rerank.postprocess_nodes(make_nodes(chunks), query_str="q")
    assert embed.text_batches == [chunks, chunks]
    assert rerank.cache_info()["size"] == 0


def test_same_text_twice_in_one_query_embedded_once(make_table_embedding, random_table):
    chunks = ["alpha text", "beta text", "alpha text"]
    embed = make_table_embedding(random_table(chunks + ["q"]))
    out = POVReranker(embed_model=embed, top_n=3).postprocess_nodes(make_nodes(chunks), query_str="q")
    assert embed.text_batches == [["alpha text", "beta text"]]
    assert len(out) == 3


# --------------------------------------------------------------- returned nodes
def test_returns_copies_with_hidden_scores(make_table_embedding, random_table):
    chunks, povs = chunk_texts(6), pov_texts(3)
    embed = make_table_embedding(random_table(chunks + povs + ["q"]))
    nodes = make_nodes(chunks)
    before = [(n.node.metadata.copy(), list(n.node.excluded_llm_metadata_keys), n.score) for n in nodes]
    out = POVReranker(embed_model=embed, povs=povs, top_n=3).postprocess_nodes(nodes, query_str="q")

    assert [(n.node.metadata, n.node.excluded_llm_metadata_keys, n.score) for n in nodes] == before
    originals = {id(n.node) for n in nodes}
    for n in out:
        assert id(n.node) not in originals
        assert set(KEYS) <= set(n.node.metadata)
        assert n.node.metadata["src"].startswith("f")
        assert set(KEYS) <= set(n.node.excluded_llm_metadata_keys)
        assert set(KEYS) <= set(n.node.excluded_embed_metadata_keys)
        for mode in (MetadataMode.LLM, MetadataMode.EMBED):
            content = n.node.get_content(metadata_mode=mode)
            assert "src: f" in content
            assert not any(k in content for k in KEYS)
        assert n.score == n.node.metadata["pov_score"]


def test_async_postprocess(make_table_embedding, random_table, spec_reference):
    chunks, povs = chunk_texts(5), pov_texts(2)
    table = random_table(chunks + povs + ["q"])
    rerank = POVReranker(embed_model=make_table_embedding(table), povs=povs, top_n=2)
    out = asyncio.run(rerank.apostprocess_nodes(make_nodes(chunks), query_str="q"))
    expected = spec_reference([table[c] for c in chunks], table["q"], [table[p] for p in povs], 10, 2)
    assert [n.node.get_content() for n in out] == [chunks[i] for i, _ in expected]


# --------------------------------------------------------------- edge cases
def test_no_povs_ranks_by_query_similarity(make_table_embedding, random_table):
    chunks = chunk_texts(8)
    table = random_table(chunks + ["q"], seed=3)
    rerank = POVReranker(embed_model=make_table_embedding(table), povs=[], query_top_n=6, top_n=4)
    out = rerank.postprocess_nodes(make_nodes(chunks), query_str="q")
    q = table["q"]
    s = [np.dot(table[c], q) / np.linalg.norm(table[c]) / np.linalg.norm(q) for c in chunks]
    best = sorted(range(8), key=lambda i: -s[i])[:4]
    assert [n.node.get_content() for n in out] == [chunks[i] for i in best]
    np.testing.assert_allclose([n.score for n in out], [s[i] for i in best])
    assert all(n.node.metadata["pov_score"] is None for n in out)
    assert all(n.node.metadata["pov_similarities"] == [] for n in out)


def test_fewer_nodes_than_top_n(make_table_embedding, random_table, spec_reference):
    chunks, povs = chunk_texts(3), pov_texts(4)
    table = random_table(chunks + povs + ["q"], seed=5)
    rerank = POVReranker(embed_model=make_table_embedding(table), povs=povs, query_top_n=10, top_n=5)
    out = rerank.postprocess_nodes(make_nodes(chunks), query_str="q")
    expected = spec_reference([table[c] for c in chunks], table["q"], [table[p] for p in povs], 10, 5)
    assert len(out) == 3
    assert [n.node.get_content() for n in out] == [chunks[i] for i, _ in expected]


def test_no_nodes_embeds_nothing(make_table_embedding):
    embed = make_table_embedding({})
    assert POVReranker(embed_model=embed, povs=["p"]).postprocess_nodes([], query_str="q") == []
    assert embed.n_embedded == 0


def test_empty_text_nodes_not_embedded_and_ranked_last(make_table_embedding):
    # The real chunks point away from the query (negative cosine): an empty chunk
    # must still rank below them, not at cosine 0.
    table = {"a text": [-1.0, 0.2], "b text": [-1.0, 0.5], "q": [1.0, 0.0], "p": [0.0, 1.0]}
    embed = make_table_embedding(table)
    rerank = POVReranker(embed_model=embed, povs=["p"], query_top_n=4, top_n=4)
    out = rerank.postprocess_nodes(make_nodes(["", "a text", "   \n", "b text"]), query_str="q")
    assert embed.text_batches == [["a text", "b text"]]
    assert [n.node.node_id for n in out] == ["n3", "n1", "n0", "n2"]
    for n in out[2:]:
        assert n.score == 0.0 and n.node.metadata["query_similarity"] == 0.0
    # with query_top_n smaller than the real chunks, empties are dropped first
    out = POVReranker(embed_model=embed, povs=["p"], query_top_n=2, top_n=4).postprocess_nodes(
        make_nodes(["", "a text", "   \n", "b text"]), query_str="q"
    )
    assert [n.node.node_id for n in out] == ["n3", "n1"]


def test_all_nodes_empty(make_table_embedding):
    embed = make_table_embedding({"q": [1.0, 0.0], "p": [0.0, 1.0]})
    out = POVReranker(embed_model=embed, povs=["p"]).postprocess_nodes(make_nodes(["", " "]), query_str="q")
    assert [n.score for n in out] == [0.0, 0.0]
    assert embed.text_batches == []


def test_zero_vectors_give_zero_cosine_not_nan(make_table_embedding):
    table = {
        "zero chunk": [0.0, 0.0, 0.0],
        "x chunk": [1.0, 1.0, 0.0],
        "y chunk": [0.0, 1.0, 0.0],
        "q": [1.0, 0.0, 0.0],
        "zero pov": [0.0, 0.0, 0.0],
        "p": [0.0, 1.0, 0.0],
    }
    rerank = POVReranker(embed_model=make_table_embedding(table), povs=["zero pov", "p"], top_n=3)
    out = rerank.postprocess_nodes(make_nodes(["zero chunk", "x chunk", "y chunk"]), query_str="q")
    assert [n.node.get_content() for n in out] == ["y chunk", "x chunk", "zero chunk"]
    for n in out:
        values = [n.score, n.node.metadata["query_similarity"], *n.node.metadata["pov_similarities"]]
        assert all(np.isfinite(values))
    assert out[-1].score == 0.0
    assert out[0].node.metadata["pov_similarities"] == [0.0, pytest.approx(1.0)]

    # zero query vector: every s_i is 0, retrieval order is kept for the query stage
    table["zero q"] = [0.0, 0.0, 0.0]
    rerank = POVReranker(embed_model=make_table_embedding(table), povs=[], top_n=3)
    out = rerank.postprocess_nodes(make_nodes(["zero chunk", "x chunk", "y chunk"]), query_str="zero q")
    assert [n.score for n in out] == [0.0, 0.0, 0.0]
    assert [n.node.node_id for n in out] == ["n0", "n1", "n2"]


def test_missing_query_bundle_raises(make_table_embedding):
    rerank = POVReranker(embed_model=make_table_embedding({}), povs=["p"])
    with pytest.raises(ValueError, match="needs the query"):
        rerank.postprocess_nodes(make_nodes(["a"]))
    with pytest.raises(ValueError, match="needs the query"):
        rerank.postprocess_nodes(make_nodes(["a"]), query_bundle=None)


def test_query_bundle_accepted(make_table_embedding, random_table):
    chunks = chunk_texts(2)
    embed = make_table_embedding(random_table(chunks + ["q"]))
    out = POVReranker(embed_model=embed).postprocess_nodes(make_nodes(chunks), QueryBundle("q"))
    assert len(out) == 2 and embed.queries == ["q"]


def test_empty_query_not_embedded(make_table_embedding, random_table):
    chunks = chunk_texts(3)
    embed = make_table_embedding(random_table(chunks + ["p"]))
    out = POVReranker(embed_model=embed, povs=["p"], top_n=3).postprocess_nodes(make_nodes(chunks), query_str="  ")
    assert embed.queries == ["p"]
    assert [n.node.metadata["query_similarity"] for n in out] == [0.0, 0.0, 0.0]
    assert [n.score for n in out] == sorted((n.score for n in out), reverse=True)


def test_new_embed_model_drops_cached_vectors(make_table_embedding, random_table):
    chunks = chunk_texts(3)
    table = random_table(chunks + ["p", "q"])
    first, second = make_table_embedding(table), make_table_embedding(table)
    rerank = POVReranker(embed_model=first, povs=["p"])
    rerank.postprocess_nodes(make_nodes(chunks), query_str="q")
    rerank.embed_model = second
    rerank.postprocess_nodes(make_nodes(chunks), query_str="q")
    assert second.queries == ["p", "q"] and second.text_batches == [chunks]


def test_duplicate_povs_deduped_in_order(make_table_embedding, random_table):
    povs = ["b view", "a view", "b view", " a view ", "", "c view"]
    embed = make_table_embedding(random_table(["b view", "a view", "c view", "q", "x text"]))
    rerank = POVReranker(embed_model=embed, povs=povs)
    assert rerank.povs == ["b view", "a view", "c view"]
    out = rerank.postprocess_nodes(make_nodes(["x text"]), query_str="q")
    assert embed.queries == ["b view", "a view", "c view", "q"]
    assert len(out[0].node.metadata["pov_similarities"]) == 3


def test_changing_povs_reembeds_them(make_table_embedding, random_table):
    embed = make_table_embedding(random_table(["p1", "p2", "q", "x text"]))
    rerank = POVReranker(embed_model=embed, povs=["p1"])
    rerank.postprocess_nodes(make_nodes(["x text"]), query_str="q")
    rerank.povs = ["p2"]
    out = rerank.postprocess_nodes(make_nodes(["x text"]), query_str="q")
    assert embed.queries == ["p1", "q", "p2", "q"]
    assert len(out[0].node.metadata["pov_similarities"]) == 1


@pytest.mark.parametrize("field,value", [("top_n", 0), ("query_top_n", 0), ("cache_size", -1)])
def test_invalid_settings_rejected(make_table_embedding, field, value):
    with pytest.raises(ValueError):
        POVReranker(embed_model=make_table_embedding({}), **{field: value})


# --------------------------------------------------------------- POV files
def test_from_file(tmp_path, make_table_embedding):
    path = tmp_path / "povs.txt"
    path.write_text(
        "# viewpoints for the trade corpus\n\nSanctions reshaped energy trade.\n"
        "  Tariffs protect local industry.  \n   # indented comment\n"
        "Sanctions reshaped energy trade.\n\n",
        encoding="utf-8",
    )
    rerank = POVReranker.from_file(path, embed_model=make_table_embedding({}), top_n=3)
    assert rerank.povs == ["Sanctions reshaped energy trade.", "Tariffs protect local industry."]
    assert rerank.top_n == 3
    with pytest.raises(TypeError):
        POVReranker.from_file(path, embed_model=make_table_embedding({}), povs=["x"])


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n   \n#another\n"])
def test_from_empty_file_names_the_file(tmp_path, make_table_embedding, content):
    path = tmp_path / "empty_povs.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match="empty_povs.txt"):
        POVReranker.from_file(str(path), embed_model=make_table_embedding({}))


# Viewpoints as our users' Windows tools save them: Japanese, with CP932-only characters (① ～ 髙).
JA_POVS = [
    "域内関税の撤廃は加盟国間の貿易を増やした。",
    "①原産地規則が域内貿易を制限している～という見方。",
    "髙い対外共通関税は域外からの輸入を減らす。",
]


@pytest.mark.parametrize("encoding", ["cp932", "shift_jis", "euc_jp", "utf-16", "utf-8-sig", "utf-8"])
def test_from_file_reads_the_povs_in_the_encoding_they_were_saved_in(tmp_path, make_table_embedding, encoding):
    if encoding in ("shift_jis", "euc_jp"):  # no encoding for the CP932-only characters
        povs = [p.replace("①", "").replace("～", "ー").replace("髙", "高") for p in JA_POVS]
    else:
        povs = JA_POVS
    path = tmp_path / f"povs_{encoding}.txt"
    path.write_bytes(("# 視点\r\n" + "\r\n".join(povs) + "\r\n").encode(encoding))
    rerank = POVReranker.from_file(path, embed_model=make_table_embedding({}))
    assert rerank.povs == povs


def test_an_undecodable_pov_file_is_named_in_the_error(tmp_path, make_table_embedding):
    from llama_unsloth.errors import UnreadableFileError

    path = tmp_path / "povs.bin"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UnreadableFileError, match=r"^POV file .*povs\.bin: binary data, not text"):
        POVReranker.from_file(path, embed_model=make_table_embedding({}))


def _query_options(povs_file) -> tuple:
    from recipes.config import parse
    from recipes.query import make_parser

    return parse(make_parser(), ["--question", "関税は？", "--povs", str(povs_file)])


def test_a_cp932_pov_file_given_with_povs_reranks(tmp_path, make_table_embedding, random_table):
    path = tmp_path / "povs.txt"
    path.write_bytes("\r\n".join(JA_POVS).encode("cp932"))
    _, _, retrieval, _ = _query_options(path)
    chunks = chunk_texts(6)
    embed = make_table_embedding(random_table([*chunks, *JA_POVS, "関税は？"], dim=8))
    (rerank,) = [p for p in retrieval.postprocessors(embed) if isinstance(p, POVReranker)]
    assert rerank.povs == JA_POVS
    out = rerank.postprocess_nodes(make_nodes(chunks), query_str="関税は？")
    assert out and all(len(n.node.metadata["pov_similarities"]) == len(JA_POVS) for n in out)


def test_an_unreadable_pov_file_given_with_povs_is_one_line_before_the_model_loads(
    tmp_path, make_table_embedding, monkeypatch, capsys
):
    import llama_unsloth.rag
    from llama_unsloth.llms import factory
    from recipes.query import main

    path = tmp_path / "povs.txt"
    path.write_bytes(b"\x00\x01\x02binary" * 100)
    monkeypatch.setattr(
        llama_unsloth.rag, "open_index_with_embeddings", lambda *a, **k: (None, make_table_embedding({}))
    )
    monkeypatch.setattr(factory, "load_llm", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(SystemExit) as exit_:
        main(["--question", "q", "--povs", str(path)])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: POV file {path}: binary data, not text"), lines


def test_class_name_and_fields_documented(make_table_embedding):
    assert POVReranker.class_name() == "POVReranker"
    for name, field in POVReranker.model_fields.items():
        if name != "callback_manager":
            assert field.description, name
