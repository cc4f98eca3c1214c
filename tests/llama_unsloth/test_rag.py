"""llama_unsloth.rag: batch prompts equal the query engine's, question loaders, JSONL resume helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List

import pytest

from tests.recipes._helpers import TokenizerGuard, build_small_index, embed_model


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from llama_unsloth.rag import open_index

    return open_index(build_small_index(tmp_path_factory.mktemp("rag")), embed_model=embed_model())


class _Prompts:
    """Collects the prompts LlamaIndex sends to LLM.complete (instrumentation events)."""

    def __enter__(self) -> List[str]:
        from llama_index.core.instrumentation import get_dispatcher
        from llama_index.core.instrumentation.event_handlers import BaseEventHandler
        from llama_index.core.instrumentation.events.llm import LLMCompletionStartEvent

        prompts: List[str] = []

        class Handler(BaseEventHandler):
            def handle(self, event: Any, **kwargs: Any) -> None:
                if isinstance(event, LLMCompletionStartEvent):
                    prompts.append(event.prompt)

        self._handler, self._root = Handler(), get_dispatcher()
        self._root.add_event_handler(self._handler)
        return prompts

    def __exit__(self, *exc: Any) -> None:
        self._root.event_handlers.remove(self._handler)


@pytest.mark.parametrize("povs", [False, True])
def test_batch_prompt_is_the_query_engine_prompt(index: Any, tiny_llm: Any, povs: bool) -> None:
    from llama_unsloth import rag

    from tests.recipes._helpers import DATA

    post = rag.make_postprocessors(embed_model(), povs_file=DATA / "povs.txt" if povs else None)
    question = "Which countries founded Mercosur?"
    with _Prompts() as prompts:
        response = rag.make_query_engine(index, tiny_llm, post).query(question)
    prepared = rag.build_rag_prompt(tiny_llm, question, rag.retrieve(index, question, post))
    qa = tiny_llm.qa_template().partial_format(query_str=question)
    assert prompts[0] == tiny_llm._get_prompt(qa, context_str=prepared.pieces[0])
    if not povs:  # 3 chunks fit one prompt; 5 POV-ranked chunks may need refine calls
        assert prepared.prompt is not None and prompts == [prepared.prompt]
    assert len(prompts) == len(prepared.pieces)
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in prepared.nodes]
    answer = rag.answer_rag_batch(tiny_llm, [prepared])[0]
    assert answer.answer == str(response) and "mercosur.txt" in answer.sources


def test_context_too_long_for_one_call_is_refined_like_the_engine(index: Any, tiny_llama_path: Path) -> None:
    from llama_unsloth import UnslothLLM, rag

    llm = UnslothLLM(model_name=str(tiny_llama_path), load_in_4bit=False, max_new_tokens=8, max_seq_length=700, set_global_tokenizer=False)
    question = "What do customs unions and free trade areas have in common?"
    with TokenizerGuard():
        prepared = rag.build_rag_prompt(llm, question, rag.retrieve(index, question, rag.make_postprocessors()))
        assert prepared.prompt is None and len(prepared.pieces) > 1
        with _Prompts() as prompts:
            expected = str(rag.make_query_engine(index, llm).query(question))
        assert len(prompts) > 1
        assert rag.answer_rag_batch(llm, [prepared])[0].answer == expected


def test_load_questions_every_format(tmp_path: Path) -> None:
    import pandas as pd

    from llama_unsloth.rag import QuestionsFileError, load_questions

    want = ["First?", "Second?", "First?"]
    (tmp_path / "q.txt").write_text("First?\n\n# a comment\n  Second?  \nFirst?\n", encoding="utf-8")
    (tmp_path / "q.json").write_text(json.dumps(["First?", {"question": "Second?"}, {"instruction": "First?"}]), encoding="utf-8")
    (tmp_path / "q.jsonl").write_text('"First?"\n{"question": "Second?"}\n\n{"instruction": "First?"}\n', encoding="utf-8")
    pd.DataFrame({"id": [1, 2, 3], "Question": want}).to_csv(tmp_path / "q.csv", index=False)
    pd.DataFrame({"instruction": want, "x": [1, 2, 3]}).to_excel(tmp_path / "q.xlsx", index=False)
    for ext in ("txt", "json", "jsonl", "csv", "xlsx"):
        assert load_questions(tmp_path / f"q.{ext}") == want, ext
    (tmp_path / "q.pdf").write_text("x")
    with pytest.raises(QuestionsFileError, match="Unsupported questions file type '.pdf'"):
        load_questions(tmp_path / "q.pdf")
    (tmp_path / "bad.json").write_text('{"questions": 1}')
    with pytest.raises(QuestionsFileError, match="JSON list"):
        load_questions(tmp_path / "bad.json")
    (tmp_path / "empty.txt").write_text("\n# only a comment\n")
    with pytest.raises(QuestionsFileError, match="holds no questions"):
        load_questions(tmp_path / "empty.txt")


def test_resume_helpers(tmp_path: Path) -> None:
    from llama_unsloth.rag import ordered_records, pending_questions, read_answers_jsonl

    path = tmp_path / "a.jsonl"
    path.write_text('{"instruction": "A", "answer": "1"}\n{"instruction": "B", "answer": "2"}\n{"instruction": "A", "ans', encoding="utf-8")
    records = read_answers_jsonl(path, repair=True)
    assert [r["instruction"] for r in records] == ["A", "B"]
    assert path.read_text(encoding="utf-8").endswith('"2"}\n')  # torn tail cut off
    questions = ["A", "B", "A", "C"]
    assert pending_questions(questions, records) == [2, 3]
    assert [r["answer"] for r in ordered_records(questions, records)] == ["1", "2"]


def test_ngram_overlap() -> None:
    from llama_unsloth.rag import ngram_overlap

    context = "The Treaty of Asuncion created Mercosur in 1991."
    assert ngram_overlap("The Treaty of Asuncion created it.", context) == pytest.approx(2 / 3)
    assert ngram_overlap("Too short.", context) == 0.0
    assert ngram_overlap("Bananas are a yellow fruit.", context) == 0.0


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_result_tables_are_never_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    import pandas as pd

    from llama_unsloth.rag import write_table

    target = tmp_path / f"answers{suffix}"
    rows = [{"instruction": "Q1", "answer": "A1"}, {"instruction": "Q2", "answer": "A2"}]
    write_table(rows, target)
    before = target.read_bytes()

    def crash_midway(*args: Any, **kwargs: Any) -> None:
        path = args[1] if suffix == ".csv" else args[0]
        Path(path).write_text("instruction,context,ans")  # a partial file, then the process dies
        raise KeyboardInterrupt

    if suffix == ".csv":
        monkeypatch.setattr(pd.DataFrame, "to_csv", crash_midway)
    else:
        monkeypatch.setattr(pd, "ExcelWriter", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        write_table(rows + [{"instruction": "Q3", "answer": "A3"}], target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
