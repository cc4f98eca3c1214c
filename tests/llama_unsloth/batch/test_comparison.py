"""llama_unsloth.batch.comparison: word n-gram overlap between an answer and the retrieved context."""

from __future__ import annotations

import pytest


def test_ngram_overlap() -> None:
    from llama_unsloth.batch.comparison import ngram_overlap

    context = "The Treaty of Asuncion created Mercosur in 1991."
    assert ngram_overlap("The Treaty of Asuncion created it.", context) == pytest.approx(2 / 3)
    assert ngram_overlap("Too short.", context) == 0.0
    assert ngram_overlap("Bananas are a yellow fruit.", context) == 0.0


JA_CONTEXT = "メルコスール（南米南部共同市場）は、1991年のアスンシオン条約により設立された。原加盟国はアルゼンチン、ブラジル、パラグアイ、ウルグアイの4か国である。"


def test_words_count_each_japanese_character_and_english_words() -> None:
    from llama_unsloth.batch.comparison import words

    assert words("Mercosur は1991年に設立された。") == [
        "mercosur",
        "は",
        "1991",
        "年",
        "に",
        "設",
        "立",
        "さ",
        "れ",
        "た",
    ]
    assert words("ＡＢＣ１２３ ﾃｽﾄ") == ["abc123", "テ", "ス", "ト"]  # full-width Latin and half-width kana normalised
    assert words("It's the bloc's rule.") == ["it's", "the", "bloc's", "rule"]


def test_ngram_overlap_reads_japanese() -> None:
    from llama_unsloth.batch.comparison import ngram_overlap

    copied = "原加盟国はアルゼンチン、ブラジル、パラグアイ、ウルグアイの4か国である。"
    assert ngram_overlap(copied, JA_CONTEXT) == pytest.approx(1.0)
    assert ngram_overlap("東京は日本の首都であり、人口が多い。", JA_CONTEXT) == 0.0
    # Half copied: the first clause comes from the context, the rest does not.
    half = ngram_overlap("1991年のアスンシオン条約により設立。東京の天気は晴れ", JA_CONTEXT)
    assert 0.3 < half < 0.7


def test_compare_records_on_japanese_answers_and_error_rows() -> None:
    from llama_unsloth.batch.comparison import compare_records

    rag = [
        {
            "instruction": "Q1",
            "answer": "原加盟国はアルゼンチン、ブラジル、パラグアイ、ウルグアイの4か国である。",
            "abstained": False,
            "context": JA_CONTEXT,
        },
        {
            "instruction": "Q2",
            "answer": "答えが見つかりません。",
            "abstained": False,
            "context": JA_CONTEXT,
        },  # judged by an old pattern set
        {
            "instruction": "Q3",
            "answer": "",
            "abstained": False,
            "context": "",
            "error": "The question is too long ...",
        },
    ]
    plain = [
        {"instruction": "Q1", "answer": "わかりません。", "abstained": True, "context": ""},
        {"instruction": "Q2", "answer": "東京です。", "abstained": False, "context": ""},
        {"instruction": "Q3", "answer": "The answer is not in the context.", "abstained": False, "context": ""},
    ]
    from llama_unsloth.abstention import DEFAULT_ABSTENTION_PATTERNS

    summary, rows = compare_records(rag, plain, abstention_patterns=DEFAULT_ABSTENTION_PATTERNS)
    by_mode = {s["mode"]: s for s in summary}
    assert by_mode["RAG"]["answers"] == 2  # the error row is no answer
    assert by_mode["RAG"]["abstention_rate"] == pytest.approx(0.5)  # Q2 re-judged as "I don't know"
    assert by_mode["no RAG"]["abstention_rate"] == pytest.approx(
        2 / 3, abs=1e-3
    )  # わかりません and "not in the context"
    assert by_mode["RAG"]["uses_retrieved_text"] == pytest.approx(0.5)
    q1 = rows[0]
    assert (
        q1["rag_words"] == len("原加盟国はアルゼンチン、ブラジル、パラグアイ、ウルグアイの4か国である。") - 4
    )  # three 「、」 and one 「。」 are no words
    assert q1["rag_overlap"] == pytest.approx(1.0) and q1["no_rag_overlap"] == 0.0
    # Without patterns each record's own "abstained" stands.
    summary, _ = compare_records(rag, plain)
    assert {s["mode"]: s for s in summary}["RAG"]["abstention_rate"] == 0.0
