"""The compare recipe: report files, columns and rates on controlled answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.recipes._helpers import build_small_index, exit_code, reuse_embed_model

CONTEXT = "Mercosur was founded in 1991 by Argentina, Brazil, Paraguay and Uruguay under the Treaty of Asuncion."


def _write(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_compare_report_on_known_answers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import pandas as pd

    from recipes.compare import main

    qs = ["Q1?", "Q2?", "Q3?", "Q4?"]
    rag = [
        {
            "instruction": "Q1?",
            "answer": "It was founded in 1991 by Argentina, Brazil, Paraguay and Uruguay.",
            "abstained": False,
            "context": CONTEXT,
            "sources": "mercosur.txt",
        },
        {
            "instruction": "Q2?",
            "answer": "I don't know.",
            "abstained": True,
            "context": CONTEXT,
            "sources": "mercosur.txt",
        },
        {
            "instruction": "Q3?",
            "answer": "Bananas are yellow and sweet fruit.",
            "abstained": False,
            "context": CONTEXT,
            "sources": "mercosur.txt",
        },
        {
            "instruction": "Q4?",
            "answer": "Under the Treaty of Asuncion.",
            "abstained": False,
            "context": CONTEXT,
            "sources": "mercosur.txt",
        },
    ]
    plain = [
        {"instruction": q, "answer": a, "abstained": ab, "context": "", "sources": ""}
        for q, a, ab in zip(
            qs,
            ["I don't know.", "No answer.", "I do not know.", "Paris is a city in France."],
            [True, True, True, False],
        )
    ]
    rc = main(
        [
            "--rag-jsonl",
            str(_write(tmp_path / "r.jsonl", rag)),
            "--no-rag-jsonl",
            str(_write(tmp_path / "p.jsonl", plain)),
            "--out-dir",
            str(tmp_path / "cmp"),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| RAG | 4 | 0.25 |" in printed and "| no RAG | 4 | 0.75 |" in printed

    summary = pd.read_excel(tmp_path / "cmp" / "compare.xlsx", sheet_name="summary").set_index("mode")
    assert list(summary.columns) == ["answers", "abstention_rate", "mean_words", "uses_retrieved_text"]
    assert summary.loc["RAG", "abstention_rate"] == pytest.approx(0.25)
    assert summary.loc["no RAG", "abstention_rate"] == pytest.approx(0.75)
    # Q1 and Q4 copy 4-grams from the context; Q2 and Q3 do not; no plain answer does.
    assert summary.loc["RAG", "uses_retrieved_text"] == pytest.approx(0.5)
    assert summary.loc["no RAG", "uses_retrieved_text"] == pytest.approx(0.0)
    assert summary.loc["RAG", "mean_words"] == pytest.approx((11 + 3 + 6 + 5) / 4)

    per_q = pd.read_excel(tmp_path / "cmp" / "compare.xlsx", sheet_name="questions")
    assert list(per_q.columns) == [
        "question",
        "rag_answer",
        "no_rag_answer",
        "rag_abstained",
        "no_rag_abstained",
        "rag_words",
        "no_rag_words",
        "rag_overlap",
        "no_rag_overlap",
        "sources",
    ]
    assert per_q["question"].tolist() == qs
    md = (tmp_path / "cmp" / "compare.md").read_text(encoding="utf-8")
    assert md.startswith("# RAG vs no RAG") and "## Per question" in md and "| Q3? | Bananas" in md


def test_compare_end_to_end_with_tiny_model(
    tmp_path: Path, tiny_llama_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from recipes.compare import main

    reuse_embed_model(monkeypatch)
    persist = build_small_index(tmp_path)
    qfile = tmp_path / "q.json"
    qfile.write_text(
        json.dumps([{"question": "Which countries founded Mercosur?"}, "Who won the 2018 FIFA World Cup?"]),
        encoding="utf-8",
    )
    args = [
        "--questions",
        str(qfile),
        "--persist-dir",
        str(persist),
        "--model",
        str(tiny_llama_path),
        "--no-load-in-4bit",
        "--max-new-tokens",
        "6",
        "--out-dir",
        str(tmp_path / "cmp"),
        "--no-progress",
    ]
    assert main(args) == 0
    for name in ("rag.jsonl", "no_rag.jsonl", "rag.xlsx", "no_rag.csv", "compare.md", "compare.xlsx"):
        assert (tmp_path / "cmp" / name).is_file(), name
    assert "| RAG | 2 |" in capsys.readouterr().out
    for mode in ("rag", "no_rag"):
        assert json.loads((tmp_path / "cmp" / f"{mode}.settings.json").read_text(encoding="utf-8"))["rag"] is (
            mode == "rag"
        )

    # Other settings into the same folder: refused before the index or the model loads; --fresh answers again.
    from recipes.options import IndexOptions, ModelOptions

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ModelOptions, "load", lambda *a, **k: pytest.fail("loaded the model"))
        patch.setattr(IndexOptions, "open", lambda *a, **k: pytest.fail("opened the index"))
        assert exit_code(main, [*args, "--max-new-tokens", "7"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rag.jsonl holds answers made with other settings: max_new_tokens 6 -> 7." in err
    assert main([*args, "--max-new-tokens", "7", "--fresh"]) == 0
    for mode in ("rag", "no_rag"):
        assert (
            json.loads((tmp_path / "cmp" / f"{mode}.settings.json").read_text(encoding="utf-8"))["max_new_tokens"] == 7
        )
        assert len((tmp_path / "cmp" / f"{mode}.jsonl").read_text(encoding="utf-8").splitlines()) == 2


def test_compare_needs_inputs(capsys: pytest.CaptureFixture) -> None:
    from recipes.compare import main

    assert exit_code(main, []) == 2
    assert "Pass --questions" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- Japanese answers
JA_CONTEXT = "メルコスール（南米南部共同市場）は、1991年のアスンシオン条約により設立された。原加盟国はアルゼンチン、ブラジル、パラグアイ、ウルグアイの4か国である。"


def test_compare_on_japanese_answers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import pandas as pd

    from recipes.compare import main

    rag = [
        {
            "instruction": "設立した国は？",
            "answer": "原加盟国はアルゼンチン、ブラジル、パラグアイ、ウルグアイの4か国である。",
            "abstained": False,
            "context": JA_CONTEXT,
            "sources": "mercosur_ja.txt",
        },
        {
            "instruction": "本部はどこ？",
            "answer": "該当なし",
            "abstained": False,
            "context": JA_CONTEXT,
            "sources": "mercosur_ja.txt",
        },
    ]
    plain = [
        {
            "instruction": "設立した国は？",
            "answer": "分かりません。",
            "abstained": False,
            "context": "",
            "sources": "",
        },
        {
            "instruction": "本部はどこ？",
            "answer": "モンテビデオです。",
            "abstained": False,
            "context": "",
            "sources": "",
        },
    ]
    patterns = tmp_path / "patterns.txt"
    patterns.write_text("該当なし\n", encoding="utf-8")
    rc = main(
        [
            "--rag-jsonl",
            str(_write(tmp_path / "r.jsonl", rag)),
            "--no-rag-jsonl",
            str(_write(tmp_path / "p.jsonl", plain)),
            "--out-dir",
            str(tmp_path / "cmp"),
            "--abstention-patterns",
            str(patterns),
        ]
    )
    assert rc == 0
    summary = pd.read_excel(tmp_path / "cmp" / "compare.xlsx", sheet_name="summary").set_index("mode")
    # 該当なし (the user's own pattern) and 分かりません (a default) are "I don't know" now.
    assert summary.loc["RAG", "abstention_rate"] == pytest.approx(0.5)
    assert summary.loc["no RAG", "abstention_rate"] == pytest.approx(0.5)
    assert summary.loc["RAG", "uses_retrieved_text"] == pytest.approx(0.5)  # the copied answer, not 該当なし
    per_q = pd.read_excel(tmp_path / "cmp" / "compare.xlsx", sheet_name="questions")
    assert per_q["rag_words"].tolist() == [32, 4] and per_q["no_rag_words"].tolist() == [6, 8]
    assert "| 設立した国は？ | 原加盟国は" in (tmp_path / "cmp" / "compare.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "--batch-size must be >= 1; got 0."),
        (["--max-new-tokens", "-5"], "--max-new-tokens must be >= 1; got -5."),
        (
            ["--max-new-tokens", "4096", "--max-seq-length", "2048"],
            "--max-new-tokens (4096) must be below --max-seq-length (2048): the prompt needs room too.",
        ),
    ],
)
def test_compare_bad_options_stop_before_anything_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list, message: str
) -> None:
    from recipes.compare import main

    with pytest.raises(SystemExit) as exit_:
        main(["--questions", str(tmp_path / "q.txt"), "--out-dir", str(tmp_path / "cmp"), *args])
    assert exit_.value.code == 2 and capsys.readouterr().err == f"error: {message}\n"
    assert list(tmp_path.iterdir()) == []


def test_answer_files_with_no_question_in_common_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from recipes.compare import main

    rag = _write(tmp_path / "r.jsonl", [{"instruction": "Q1?", "answer": "A.", "abstained": False, "context": "c"}])
    plain = _write(tmp_path / "p.jsonl", [{"instruction": "Other?", "answer": "B.", "abstained": False}])
    args = ["--rag-jsonl", str(rag), "--no-rag-jsonl", str(plain), "--out-dir", str(tmp_path / "cmp")]
    assert exit_code(main, args) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.out == ""
    assert f"{rag} and {plain} answer no question in common" in captured.err
    assert not (tmp_path / "cmp").exists()

    empty = _write(tmp_path / "empty.jsonl", [])
    assert exit_code(main, ["--rag-jsonl", str(rag), "--no-rag-jsonl", str(empty)]) == 2
    assert f"Answers file {empty} holds no complete answers" in capsys.readouterr().err


def test_an_out_dir_that_cannot_be_written_is_refused_before_anything_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from recipes.compare import main

    (tmp_path / "notes.txt").write_text("a regular file\n", encoding="utf-8")
    for out_dir, message in (
        (tmp_path / "notes.txt", "is a file, not a folder"),
        (tmp_path / "notes.txt" / "cmp", "which is a file, not a folder"),
    ):
        assert exit_code(main, ["--questions", str(tmp_path / "q.txt"), "--out-dir", str(out_dir)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: --out-dir") and message in err
