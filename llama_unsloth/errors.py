"""Exceptions of the RAG helpers, and the set of errors a command-line user can fix from the message alone."""

from __future__ import annotations

from typing import Tuple


class RagError(Exception):
    """Bad input to the RAG helpers; the message says what is wrong and what to do."""


class IndexNotFoundError(RagError, FileNotFoundError):
    """No usable Chroma folder or collection."""


class EmbeddingMismatchError(RagError, ValueError):
    """The index was built with another embedding model or dimension."""


class CorpusError(RagError, ValueError):
    """The documents folder is missing or holds no usable file."""


class QuestionsFileError(RagError, ValueError):
    """The questions file is missing, of an unknown type or holds no question."""


def user_errors() -> Tuple[type, ...]:
    """Exception types whose message alone tells a command-line user what to fix."""
    from llama_unsloth.llm import PromptTooLongError
    from llama_unsloth.loading import ModelLoadError
    from llama_unsloth.prompts import PromptFormatError

    return (RagError, ModelLoadError, PromptFormatError, PromptTooLongError, ImportError)


__all__ = [
    "CorpusError",
    "EmbeddingMismatchError",
    "IndexNotFoundError",
    "QuestionsFileError",
    "RagError",
    "user_errors",
]
