"""llama_unsloth.comparison: word n-gram overlap between an answer and the retrieved context."""

from __future__ import annotations

import pytest


def test_ngram_overlap() -> None:
    from llama_unsloth.comparison import ngram_overlap

    context = "The Treaty of Asuncion created Mercosur in 1991."
    assert ngram_overlap("The Treaty of Asuncion created it.", context) == pytest.approx(2 / 3)
    assert ngram_overlap("Too short.", context) == 0.0
    assert ngram_overlap("Bananas are a yellow fruit.", context) == 0.0
