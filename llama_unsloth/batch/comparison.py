"""RAG vs no RAG: pair the two runs' answers by question, summarise them and write the report.

An answer "uses retrieved text" when at least :data:`USES_CONTEXT_THRESHOLD` of its word
:data:`NGRAM`-grams occur in the context RAG retrieved for its question.

"Words" read Japanese (and Chinese/Korean) too: Latin letters and digits form words as usual, and each
kanji, kana or hangul character counts as one word (CJK text has no spaces to split at; a character
is the unit people count it in, e.g. "400-500 文字"). Text is NFKC-normalised first, so full-width
"ＡＢＣ１２３" and half-width kana compare equal to their usual forms.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from llama_unsloth.batch.answers import group_by_question
from llama_unsloth.batch.tables import atomic_write, markdown_table, write_table

NGRAM = 4
USES_CONTEXT_THRESHOLD = 0.2


# One CJK character per word: CJK ideographs (incl. extension A, compatibility), kana, hangul.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uac00-\ud7af"
_WORD = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+(?:'[^\W_{_CJK}]+)?")


def words(text: str) -> List[str]:
    """The words of ``text``: Latin/other-script letter-digit runs (lower-cased), and each CJK character alone.

    >>> words("Mercosur は1991年に設立された。")
    ['mercosur', 'は', '1991', '年', 'に', '設', '立', 'さ', 'れ', 'た']
    """
    return _WORD.findall(unicodedata.normalize("NFKC", text or "").lower())


_words = words  # the name used before it was public


def ngram_overlap(answer: str, context: str, n: int = NGRAM) -> float:
    """Share of the answer's word n-grams (see :func:`words`) that also occur in ``context``; 0 for answers under n words."""
    words = _words(answer)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    ctx_words = _words(context)
    ctx = {tuple(ctx_words[i : i + n]) for i in range(len(ctx_words) - n + 1)}
    return sum(g in ctx for g in grams) / len(grams)


COMPARE_COLUMNS = [
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
SUMMARY_COLUMNS = ["mode", "answers", "abstention_rate", "mean_words", "uses_retrieved_text"]


def compare_records(
    rag_records: Sequence[Dict[str, Any]],
    plain_records: Sequence[Dict[str, Any]],
    abstention_patterns: Optional[Sequence[str]] = None,
) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Pairs RAG and no-RAG answers by question and summarises both.

    "Uses retrieved text" means at least 20% of the answer's word 4-grams occur in the context that
    RAG retrieved for the question (no-RAG answers are checked against the same RAG context, which
    shows how much the fine-tune alone reproduces the documents). A record that holds an error (a
    question too long for the window) is no answer: it counts in neither mode's rates.

    Args:
        rag_records: Records of the RAG run (batch JSONL).
        plain_records: Records of the fine-tune-only run.
        abstention_patterns: Re-judge "I don't know" with these regexes; ``None``: keep each record's ``abstained``.

    Returns:
        ``(summary rows, per-question rows)``; summary columns: mode, answers, abstention_rate,
        mean_words, uses_retrieved_text.
    """
    from llama_unsloth.abstention import is_abstention

    def usable(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
        out = []
        for r in records:
            if r.get("error"):
                continue
            if abstention_patterns is not None:
                r = {**r, "abstained": is_abstention(r.get("answer") or "", abstention_patterns)}
            out.append(r)
        return out

    rag_records, plain_records = usable(rag_records), usable(plain_records)
    rag_by, plain_by = group_by_question(rag_records), group_by_question(plain_records)
    questions = [r["instruction"] for r in rag_records]
    questions += [r["instruction"] for r in plain_records if r["instruction"] not in rag_by]
    rows: List[Dict[str, Any]] = []
    used: Dict[str, int] = {}
    for q in questions:
        k = used.get(q, 0)
        used[q] = k + 1
        a = rag_by[q][k] if k < len(rag_by.get(q, [])) else None
        b = plain_by[q][k] if k < len(plain_by.get(q, [])) else None
        if a is None and b is None:
            continue
        context = (a or {}).get("context", "")
        rows.append(
            {
                "question": q,
                "rag_answer": a["answer"] if a else None,
                "no_rag_answer": b["answer"] if b else None,
                "rag_abstained": bool(a["abstained"]) if a else None,
                "no_rag_abstained": bool(b["abstained"]) if b else None,
                "rag_words": len(_words(a["answer"])) if a else None,
                "no_rag_words": len(_words(b["answer"])) if b else None,
                "rag_overlap": round(ngram_overlap(a["answer"], context), 3) if a else None,
                "no_rag_overlap": round(ngram_overlap(b["answer"], context), 3) if b and a else None,
                "sources": (a or {}).get("sources", ""),
            }
        )

    def summarise(mode: str, prefix: str) -> Dict[str, Any]:
        got = [r for r in rows if r[f"{prefix}_answer"] is not None]
        n = len(got)
        overlaps = [r[f"{prefix}_overlap"] for r in got if r[f"{prefix}_overlap"] is not None]
        return {
            "mode": mode,
            "answers": n,
            "abstention_rate": round(sum(r[f"{prefix}_abstained"] for r in got) / n, 3) if n else None,
            "mean_words": round(sum(r[f"{prefix}_words"] for r in got) / n, 2) if n else None,
            "uses_retrieved_text": round(sum(o >= USES_CONTEXT_THRESHOLD for o in overlaps) / len(overlaps), 3)
            if overlaps
            else None,
        }

    return [summarise("RAG", "rag"), summarise("no RAG", "no_rag")], rows


def write_compare_report(
    summary: Sequence[Dict[str, Any]], rows: Sequence[Dict[str, Any]], out_dir: Union[str, Path]
) -> Dict[str, Path]:
    """Writes ``compare.xlsx`` (sheets summary, questions) and ``compare.md`` into ``out_dir`` atomically."""
    folder = Path(out_dir)
    xlsx, md = folder / "compare.xlsx", folder / "compare.md"
    write_table([], xlsx, sheets={"summary": (summary, SUMMARY_COLUMNS), "questions": (rows, COMPARE_COLUMNS)})
    text = (
        "\n\n".join(
            [
                "# RAG vs no RAG",
                markdown_table(summary, SUMMARY_COLUMNS),
                f'*abstention_rate*: share of "I don\'t know"-style answers. *mean_words*: mean answer length in words (each Japanese/CJK character counts as one). '
                f"*uses_retrieved_text*: share of answers with at least {USES_CONTEXT_THRESHOLD:.0%} of their word {NGRAM}-grams "
                "in the context RAG retrieved for that question.",
                "## Per question",
                markdown_table(rows, COMPARE_COLUMNS),
            ]
        )
        + "\n"
    )

    def write_md(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write(md, write_md)
    return {"xlsx": xlsx, "md": md}


__all__ = [
    "COMPARE_COLUMNS",
    "SUMMARY_COLUMNS",
    "compare_records",
    "ngram_overlap",
    "words",
    "write_compare_report",
]
