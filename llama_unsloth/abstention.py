"""Recognising "I don't know"-style answers, so abstention can be counted with and without RAG."""

from __future__ import annotations

import re
from typing import List, Optional, Sequence

DEFAULT_ABSTENTION_PATTERNS: List[str] = [
    r"\bI\s+(?:do\s+not|don'?t|dont)\s+know\b",
    r"\b(?:cannot|can'?t|unable to)\s+(?:answer|determine|find|say)\b",
    r"\bno\s+answer\b",
    r"\bnot\s+(?:mentioned|provided|stated|found|given|contained)\s+in\s+the\s+(?:given\s+|provided\s+)?(?:context|documents?|text)\b",
    r"\bthe\s+(?:given\s+|provided\s+)?(?:context|documents?|text)\s+(?:does\s+not|doesn'?t)\s+(?:contain|provide|mention|say)\b",
    r"\bno\s+(?:relevant\s+)?information\b",
]


def is_abstention(answer: str, patterns: Optional[Sequence[str]] = None) -> bool:
    """True when an answer is an "I don't know"-style reply (or empty).

    Args:
        answer: The model's answer text.
        patterns: Regular expressions (case-insensitive); defaults to ``DEFAULT_ABSTENTION_PATTERNS``.
    """
    text = answer.strip()
    if not text:
        return True
    compiled = [re.compile(p, re.IGNORECASE) for p in (patterns or DEFAULT_ABSTENTION_PATTERNS)]
    # Only the opening of an answer decides: a long answer that mentions "no answer" in passing is an answer.
    head = text[:300]
    return any(p.search(head) for p in compiled)
