"""Recognising "I don't know"-style answers, so abstention can be counted with and without RAG.

The defaults cover the English and Japanese replies our users' models give ("I dont know" is the
very string their alpaca layout asks for; "わかりません", "不明です", "答えが見つかりません" ...).
Patterns are regular expressions, matched case-insensitively against the opening of an answer
(Unicode NFKC-normalised first, so full-width "ＩＤＫ"-style text and half-width kana match too).
Pass your own with ``patterns=`` / ``UnslothLLM(abstention_patterns=...)``, or read them from a file
with :func:`load_patterns` (``--abstention-patterns`` in the ``batch`` and ``compare`` recipes).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Pattern, Sequence, Tuple, Union

ENGLISH_ABSTENTION_PATTERNS: List[str] = [
    r"\bI\s+(?:do\s+not|don'?t|dont|really\s+don'?t)\s+know\b",
    r"\bI'?m\s+not\s+sure\b",
    r"\b(?:cannot|can'?t|could\s+not|couldn'?t|unable\s+to)\s+(?:answer|determine|find|say|tell)\b",
    r"\bno\s+answer\b",
    r"\bnot\s+(?:mentioned|provided|stated|found|given|contained|included|available|present)\s+in\s+the\s+(?:given\s+|provided\s+)?(?:context|documents?|text|information)\b",
    # "The answer is not in the context.", "That is not in the provided documents."
    r"\b(?:is|are)\s+not\s+in\s+the\s+(?:given\s+|provided\s+)?(?:context|documents?|text)\b",
    r"\bthe\s+(?:given\s+|provided\s+)?(?:context|documents?|text)\s+(?:does\s+not|doesn'?t)\s+(?:contain|provide|mention|say|include)\b",
    r"\bno\s+(?:relevant\s+)?information\b",
]
# No \b: Japanese has no spaces, and every kana/kanji is a "word" character to the regex engine.
JAPANESE_ABSTENTION_PATTERNS: List[str] = [
    r"(?:わかり|分かり|判り|解り)ません",
    r"(?:わから|分から|判ら)ない",
    r"ワカリマセン|ワカラナイ",
    r"不明です",
    r"不明であ[るり]",
    r"(?:答え|回答|解答|情報|記載|該当する(?:情報|記述)?)が(?:見つかり|見当たり|ありませ|ございませ)",
    r"(?:答え|回答)(?:られ|かね)ません",
    r"(?:お答え|回答)(?:でき|いたしかね)ません",
    r"(?:文脈|コンテキスト|資料|文書|テキスト|与えられた情報)(?:の中)?に(?:は)?(?:記載が|情報が|答えが)?(?:ありません|含まれていません|書かれていません|見つかりません)",
    r"存じません",
    r"知りません",
]
DEFAULT_ABSTENTION_PATTERNS: List[str] = ENGLISH_ABSTENTION_PATTERNS + JAPANESE_ABSTENTION_PATTERNS
# Only the opening of an answer decides: a long answer that mentions "no answer" in passing is an answer.
HEAD_CHARS = 300


@lru_cache(maxsize=64)
def _compiled(patterns: Tuple[str, ...]) -> List[Pattern[str]]:
    return [re.compile(unicodedata.normalize("NFKC", p), re.IGNORECASE) for p in patterns]


def is_abstention(answer: str, patterns: Optional[Sequence[str]] = None) -> bool:
    """True when an answer is an "I don't know"-style reply (or empty).

    Args:
        answer: The model's answer text.
        patterns: Regular expressions (case-insensitive); defaults to ``DEFAULT_ABSTENTION_PATTERNS``.
    """
    text = unicodedata.normalize("NFKC", answer or "").strip()
    if not text:
        return True
    head = text[:HEAD_CHARS]
    return any(p.search(head) for p in _compiled(tuple(patterns or DEFAULT_ABSTENTION_PATTERNS)))


def load_patterns(path: Union[str, Path], include_defaults: bool = True) -> List[str]:
    """Abstention patterns from a text file: one regular expression per line; blank and ``#`` lines skipped.

    Args:
        path: The file (any encoding :mod:`llama_unsloth.text_files` reads).
        include_defaults: Add the file's patterns to :data:`DEFAULT_ABSTENTION_PATTERNS` rather than replace them.

    Raises:
        RagError: The file is missing or unreadable, or a line is not a valid regular expression (named by line number).
    """
    from llama_unsloth.errors import RagError, UnreadableFileError
    from llama_unsloth.text_files import read_text

    file = Path(path).expanduser()
    if not file.is_file():
        raise RagError(
            f"Abstention patterns file {str(path)!r} not found. Pass a text file with one regular expression per line."
        )
    try:
        lines = read_text(file).text.splitlines()
    except UnreadableFileError as err:
        raise RagError(f"Abstention patterns file {err}") from err
    patterns = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            re.compile(line)
        except re.error as err:
            raise RagError(f"{file}, line {n}: {line!r} is not a valid regular expression ({err}).") from err
        patterns.append(line)
    if not patterns:
        raise RagError(f"Abstention patterns file {str(path)!r} holds no pattern.")
    return (list(DEFAULT_ABSTENTION_PATTERNS) if include_defaults else []) + patterns


__all__ = [
    "DEFAULT_ABSTENTION_PATTERNS",
    "ENGLISH_ABSTENTION_PATTERNS",
    "JAPANESE_ABSTENTION_PATTERNS",
    "is_abstention",
    "load_patterns",
]
