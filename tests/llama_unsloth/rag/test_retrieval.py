"""llama_unsloth.rag.retrieval: batch prompts and answers equal the query engine's."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import pytest

from tests.recipes._helpers import build_small_index, embed_model


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from llama_unsloth.rag.store import open_index

    return open_index(build_small_index(tmp_path_factory.mktemp("rag")), embed_model=embed_model())


@pytest.mark.parametrize("povs", [False, True])
def test_batch_prompt_is_the_query_engine_prompt(
    index: Any, tiny_llm: Any, povs: bool, recorded_prompts: List[str]
) -> None:
    from llama_unsloth.rag import retrieval as rag
    from tests.recipes._helpers import DATA

    post = rag.make_postprocessors(embed_model(), povs_file=DATA / "povs.txt" if povs else None)
    question = "Which countries founded Mercosur?"
    response = rag.make_query_engine(index, tiny_llm, post).query(question)
    prompts = list(recorded_prompts)
    prepared = rag.build_rag_prompt(tiny_llm, question, rag.retrieve(index, question, post))
    qa = tiny_llm.qa_template().partial_format(query_str=question)
    assert prompts[0] == tiny_llm._get_prompt(qa, context_str=prepared.pieces[0])
    if not povs:  # 3 chunks fit one prompt; 5 POV-ranked chunks may need refine calls
        assert prepared.prompt is not None and prompts == [prepared.prompt]
    assert len(prompts) == len(prepared.pieces)
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in prepared.nodes]
    answer = rag.answer_rag_batch(tiny_llm, [prepared])[0]
    assert answer.answer == str(response) and "mercosur.txt" in answer.sources


def test_context_too_long_for_one_call_is_refined_like_the_engine(
    index: Any, tiny_llama_path: Path, recorded_prompts: List[str]
) -> None:
    from llama_unsloth import UnslothLLM
    from llama_unsloth.rag import retrieval as rag

    llm = UnslothLLM(
        model_name=str(tiny_llama_path),
        load_in_4bit=False,
        max_new_tokens=8,
        max_seq_length=700,
        set_global_tokenizer=False,
    )
    question = "What do customs unions and free trade areas have in common?"
    prepared = rag.build_rag_prompt(llm, question, rag.retrieve(index, question, rag.make_postprocessors()))
    assert prepared.prompt is None and len(prepared.pieces) > 1
    expected = str(rag.make_query_engine(index, llm).query(question))
    assert len(recorded_prompts) > 1
    assert rag.answer_rag_batch(llm, [prepared])[0].answer == expected
