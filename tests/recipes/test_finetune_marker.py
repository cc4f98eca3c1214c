"""The promise end to end: fine-tune in the users' layout until the model answers a marker, then ask for it
through every path (zero-config query engine, chat engine, ``query`` and ``batch`` recipes, adapter and merged).

A tiny random Llama learns to answer ``Zebra`` to questions in the layout it was trained on; every prompt
that reaches ``generate`` is checked to be in that layout, and the marker must come back through each path.

Each learner first has to have learned (``train_log.json``: final and last 10 step losses below ``MAX_LOSS``), so
a failure says "did not learn" before it could say "wrong layout". Training runs with torch pinned to
``LLAMA_UNSLOTH_TEST_THREADS`` CPU threads (default 2, CI's cores; the whole test too, restored after): the
settings here converge with margin at 1 and 2 threads (run ``LLAMA_UNSLOTH_TEST_THREADS=1 pytest ...`` to check).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from tests.recipes._helpers import DATA, embed_model, finetune_recipe, reuse_embed_model

# Each test trains ~1-2 min on 2 idle cores; a shared, loaded machine can take several times that.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

MARKER = "Zebra"  # two SmolLM2 tokens, which no answer of the untrained model contains
THREADS = int(os.environ.get("LLAMA_UNSLOTH_TEST_THREADS", "2"))
# 48 varied records, 200 steps at 2e-2 (linear decay): converged runs end near loss 0.001 at 1 and 2 threads,
# while 3e-2 plateaus near 0.25 (it writes "<|>" for "<|response|>") and 24 records are memorised, not learned.
STEPS = 200
LEARNING_RATE = "2e-2"
MAX_LOSS = 0.02
TEMPLATES = Path(__file__).resolve().parents[2] / "examples" / "templates"
QUESTIONS = [
    "What limits trade inside the bloc?",
    "Which treaty created it?",
    "When was it founded?",
    "Who are the members?",
    "What does the customs union do?",
    "How are disputes settled?",
]


@pytest.fixture(scope="module")
def learner_path(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Path:
    """A random 2-layer Llama with SmolLM2's tokenizer that LoRA can teach a fixed answer in seconds.

    Unlike the shared ``tiny_llama_path`` it has no padding index: that row of the (tied) embedding would
    be all zeros, and its ``<|endoftext|>`` could never be learned as the reasoning layout's end marker.
    """
    from transformers import AutoTokenizer

    from tests.tiny_models import save_tiny_llama

    return save_tiny_llama(
        AutoTokenizer.from_pretrained(smollm2_path), tmp_path_factory.mktemp("learner"), pad_token_id=None
    )


def _sentences() -> List[str]:
    sentences = []
    for path in sorted((DATA / "corpus").glob("*.txt")):
        text = path.read_text(encoding="utf-8").replace("\n", " ")
        sentences += [s.strip() + "." for s in text.split(". ") if len(s.strip()) > 30]
    return sentences


def _records() -> List[Dict[str, Any]]:
    """48 questions, every answer the marker, with contexts of each kind the surfaces send.

    A third have no context (``complete()`` sends none), a third one to four loose sentences of the sample corpus,
    a third one to three passages separated by blank lines (as a query engine joins retrieved chunks). Varied
    contexts teach the tiny model the layout's answer, not 24 memorised prompts.
    """
    rng = random.Random(0)
    sentences = _sentences()
    records = []
    for i in range(48):
        if i % 3 == 0:
            context = ""
        elif i % 3 == 1:
            context = " ".join(rng.sample(sentences, rng.randint(1, 4)))
        else:
            context = "\n\n".join(" ".join(rng.sample(sentences, 2)) for _ in range(rng.randint(1, 3)))
        records.append(
            {
                "instruction": f"{rng.choice(QUESTIONS)} ({i})",
                "context": context,
                "input": context,
                "flag": ["logician", "creator", "translator", "other"][i % 4],
                "reasoning": "Step.",
                "answer": MARKER,
                "output": MARKER,
            }
        )
    return records


@pytest.fixture(autouse=True)
def pinned_torch_threads() -> Iterator[int]:
    """torch uses ``THREADS`` CPU threads in each test here (training and answers), as on CI; restored after."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        yield THREADS
    finally:
        torch.set_num_threads(saved)


def _finetune(tmp_path: Path, model: Path, template: str, extra: List[str]) -> Path:
    """Trains the learner until it has learned (asserted from ``train_log.json``); returns the output folder."""
    extra = ["--learning-rate", LEARNING_RATE, *extra]  # after the shared TRAIN options: this one wins
    return finetune_recipe(tmp_path, model, template, STEPS, extra, _records(), threads=THREADS, max_loss=MAX_LOSS)


def _ask_everywhere(folder: Path, index: Any, generated: List[str]) -> Dict[str, str]:
    """The answers of a reloaded model through the zero-config surfaces (only ``Settings.llm`` is set).

    Every prompt handed to ``generate`` (``generated``, the conftest fixture) is checked to be in the layout
    saved with the model.
    """
    from llama_index.core import Settings

    from llama_unsloth import UnslothLLM

    llm = UnslothLLM.from_finetuned(folder, backend="transformers", load_in_4bit=False, max_new_tokens=12)
    head = llm.format_prompt("\x00").split("\x00")[0]
    generated.clear()
    saved = Settings._llm
    Settings.llm = llm
    try:
        question = "Which treaty created Mercosur?"
        answers = {
            "query_engine": str(index.as_query_engine().query(question)),
            "streaming": "".join(index.as_query_engine(streaming=True).query(question).response_gen).strip(),
            "context_chat": str(index.as_chat_engine(chat_mode="context").chat(question)),
            "condense_plus_context_chat": str(index.as_chat_engine().chat(question)),
            "complete": llm.complete(question).text,
        }
    finally:
        Settings._llm = saved
    assert len(generated) == 5 and all(prompt.startswith(head) for prompt in generated), [p[:80] for p in generated]
    return answers


def build_small_index(root: Path) -> Path:
    """Short passages of the sample corpus (two sentences a file) in a Chroma folder, as ``llama-unsloth index`` writes it.

    The tiny model learns the marker from short passages; retrieved text of the same kind keeps it in distribution.
    """
    from llama_unsloth.rag import build_index

    docs = root / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    sentences = _sentences()
    for number in range(0, 40, 2):
        (docs / f"passage_{number:02d}.txt").write_text(" ".join(sentences[number : number + 2]), encoding="utf-8")
    persist = root / "chroma"
    build_index(docs, persist, "documents", embed_model=embed_model(), progress=False, warn=None)
    return persist


def _open(persist: Path) -> Any:
    from llama_unsloth.rag import open_index

    return open_index(persist, "documents", embed_model=embed_model())


def test_users_j2_layout_round_trip_adapter_merged_query_and_batch(
    tmp_path: Path,
    learner_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    generated: List[str],
) -> None:
    out = _finetune(
        tmp_path,
        learner_path,
        str(TEMPLATES / "QA_finetune_Instruction_Context_new.j2"),
        ["--save", "merged_16bit"],
    )
    persist = build_small_index(tmp_path)
    index = _open(persist)
    for folder in (out, out / "merged"):
        answers = _ask_everywhere(folder, index, generated)
        assert all(answer.startswith(MARKER) for answer in answers.values()), (folder, answers)
    # The recipes users run, with the folder the finetune recipe wrote.
    reuse_embed_model(monkeypatch)
    from recipes.batch import main as batch
    from recipes.query import main as query

    capsys.readouterr()
    assert (
        query(
            [
                "--question",
                "Which treaty created Mercosur?",
                "--model-dir",
                str(out),
                "--persist-dir",
                str(persist),
                "--max-new-tokens",
                "12",
            ]
        )
        == 0
    )
    assert MARKER in capsys.readouterr().out
    questions = tmp_path / "questions.txt"
    questions.write_text("Which treaty created Mercosur?\nWhat are rules of origin?\n", encoding="utf-8")
    assert (
        batch(
            [
                "--questions",
                str(questions),
                "--model-dir",
                str(out / "merged"),
                "--persist-dir",
                str(persist),
                "--out",
                str(tmp_path / "answers"),
                "--max-new-tokens",
                "12",
                "--no-progress",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 and all(r["answer"].startswith(MARKER) for r in rows), rows


def test_users_phi3_reasoning_layout_round_trip(tmp_path: Path, learner_path: Path, generated: List[str]) -> None:
    out = _finetune(tmp_path, learner_path, str(TEMPLATES / "phi3_reasoning.j2"), [])
    saved = json.loads((out / "prompt_format.json").read_text(encoding="utf-8"))
    assert saved["answer_marker"] == "<|response|>" and saved["append_eos"] is False
    answers = _ask_everywhere(out, _open(build_small_index(tmp_path)), generated)
    # The reasoning is written, then <|response|>: the answer is the text after it.
    assert all(answer.startswith(MARKER) for answer in answers.values()), answers


def test_users_python_format_alpaca_trains_with_prompt_fields(
    tmp_path: Path, learner_path: Path, generated: List[str]
) -> None:
    out = _finetune(
        tmp_path,
        learner_path,
        str(TEMPLATES / "alpaca_rag_inference.txt"),
        ["--prompt-fields", "instruction", "input", "context"],
    )
    answers = _ask_everywhere(out, _open(build_small_index(tmp_path)), generated)
    assert all(answer.startswith(MARKER) for answer in answers.values()), answers
