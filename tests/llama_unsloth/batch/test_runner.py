"""llama_unsloth.batch.runner: run_batch records every answer once, resumes, and keeps going past over-long questions."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, List, Sequence

import pytest


class StubLLM:
    """Just what fine-tune-only batch answering asks of a model: a prompt layout, a tokenizer, a window, a batch."""

    max_seq_length = 32
    max_new_tokens = 8

    def __init__(self) -> None:
        self.prompts: List[str] = []

    def format_prompt(self, question: str) -> str:
        return f"Q: {question} A:"

    def prompt_token_ids(self, text: str) -> List[str]:
        return text.split()  # one token per word

    _encode = prompt_token_ids  # the name the window check used before it moved to llama_unsloth.llms

    def complete_batch(self, prompts: Sequence[str], batch_size: int, formatted: bool) -> List[Any]:
        assert formatted and len(prompts) <= batch_size
        self.prompts.extend(prompts)
        return [SimpleNamespace(text=f"answer {p}", additional_kwargs={}, raw={"seconds": 0.5}) for p in prompts]


def _lines(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("workers", [1, 3])
def test_every_question_is_recorded_once_and_an_overlong_one_gets_an_error_row(tmp_path: Path, workers: int) -> None:
    from llama_unsloth.batch.runner import run_batch

    long = " ".join(["word"] * 40)  # 40 + 3 prompt tokens + 8 new tokens > 32
    questions = ["A?", long, "B?", "A?", "C?"]
    llm = StubLLM()
    records = run_batch(llm, questions, tmp_path / "res" / "answers", batch_size=2, progress=False, workers=workers)
    assert [r["instruction"] for r in records] == questions
    assert "exceeds max_seq_length=32" in records[1]["error"] and records[1]["answer"] == ""
    assert all(
        "error" not in r and r["answer"] == f"answer Q: {r['instruction']} A:" for i, r in enumerate(records) if i != 1
    )
    assert all(r["rag"] is False for r in records) and long not in " ".join(llm.prompts)
    written = _lines(tmp_path / "res" / "answers.jsonl")
    assert sorted(r["position"] for r in written) == [0, 1, 2, 3, 4]
    assert (tmp_path / "res" / "answers.xlsx").is_file() and (tmp_path / "res" / "answers.csv").is_file()


def test_a_rerun_answers_only_what_is_missing_and_loads_no_model_when_nothing_is(tmp_path: Path) -> None:
    from llama_unsloth.batch.runner import run_batch

    out = tmp_path / "answers"
    first = StubLLM()
    run_batch(first, ["A?", "B?"], out, progress=False)
    with open(out.with_suffix(".jsonl"), "a", encoding="utf-8") as handle:
        handle.write('{"instruction": "C?", "ans')  # a crash mid-write
    again = StubLLM()
    records = run_batch(lambda: again, ["A?", "B?", "C?"], out, progress=False)
    assert again.prompts == ["Q: C? A:"] and [r["instruction"] for r in records] == ["A?", "B?", "C?"]
    assert [r["instruction"] for r in _lines(out.with_suffix(".jsonl"))] == ["A?", "B?", "C?"]  # torn line cut off
    done = run_batch(lambda: pytest.fail("loaded the model"), ["A?", "B?", "C?"], out, progress=False)
    assert done == records


def test_bad_sizes_fail_before_anything_is_written(tmp_path: Path) -> None:
    from llama_unsloth.batch.runner import run_batch
    from llama_unsloth.errors import RagError

    with pytest.raises(RagError, match="batch_size must be at least 1, got 0"):
        run_batch(StubLLM(), ["A?"], tmp_path / "res" / "a", batch_size=0, progress=False)
    with pytest.raises(RagError, match="workers must be at least 1, got 0"):
        run_batch(StubLLM(), ["A?"], tmp_path / "res" / "a", workers=0, progress=False)
    assert list(tmp_path.iterdir()) == []


class PickyLLM(StubLLM):
    """A stub whose tokenizer cannot encode some questions (as a real one fails on a lone surrogate)."""

    def __init__(self, bad: Sequence[str]) -> None:
        super().__init__()
        self.bad = set(bad)

    def prompt_token_ids(self, text: str) -> List[str]:
        if any(b in text for b in self.bad):
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
        return text.split()


def test_a_question_that_cannot_be_encoded_gets_an_error_row_and_the_others_are_answered(tmp_path: Path) -> None:
    from llama_unsloth.batch.runner import run_batch

    records = run_batch(PickyLLM(["bad"]), ["A?", "bad?", "B?"], tmp_path / "a", batch_size=3, progress=False)
    assert [r["answer"] for r in records] == ["answer Q: A? A:", "", "answer Q: B? A:"]
    assert records[1]["error"].startswith("could not encode this question (TypeError: TextEncodeInput must be")
    # The same settings once the cause is gone: only that question is tried again.
    again = StubLLM()
    run_batch(again, ["A?", "bad?", "B?"], tmp_path / "a", progress=False)
    assert again.prompts == ["Q: bad? A:"]


def test_failures_one_after_another_stop_the_run_in_one_line_and_keep_the_answers(tmp_path: Path) -> None:
    from llama_unsloth.batch.runner import STOP_AFTER_FAILURES, run_batch
    from llama_unsloth.errors import RagError

    questions = ["A?"] + [f"bad {i}?" for i in range(STOP_AFTER_FAILURES + 2)]
    with pytest.raises(RagError, match=f"{STOP_AFTER_FAILURES} questions in a row failed, the last .*TypeError"):
        run_batch(PickyLLM(["bad"]), questions, tmp_path / "a", batch_size=1, progress=False)
    written = _lines(tmp_path / "a.jsonl")
    # The answer and the error rows before the one that stopped the run are kept (a re-run tries those again).
    assert written[0]["answer"] == "answer Q: A? A:" and len(written) == 1 + STOP_AFTER_FAILURES - 1
    assert all(r["error"].startswith("could not encode") for r in written[1:])
