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


class UnreadableFileError(RagError, ValueError):
    """A file is binary, in no text encoding, or cannot be read.

    Attributes:
        reason: A few words for summaries (``binary``, ``undecodable`` ...).
    """

    def __init__(self, message: str, reason: str = "unreadable") -> None:
        super().__init__(message)
        self.reason = reason


class EmptyFileError(UnreadableFileError):
    """A file is empty or holds only whitespace."""

    def __init__(self, message: str, reason: str = "empty") -> None:
        super().__init__(message, reason)


class ChunkSettingsMismatchError(RagError, ValueError):
    """The collection was chunked with other settings than the ones asked for."""


class IndexInterrupted(RagError):
    """Indexing stopped on SIGINT/SIGTERM; what was committed is kept.

    Attributes:
        stats: The :class:`~llama_unsloth.index_store.IndexStats` of the work committed before the stop.
        files_left: Files not indexed yet (the next run does them).
    """

    def __init__(self, message: str, stats: object = None, files_left: int = 0) -> None:
        super().__init__(message)
        self.stats = stats
        self.files_left = files_left


def user_errors() -> Tuple[type, ...]:
    """Exception types whose message alone tells a command-line user what to fix."""
    from llama_unsloth.llm import PromptTooLongError
    from llama_unsloth.loading import ModelLoadError
    from llama_unsloth.prompts import PromptFormatError
    from llama_unsloth.served_llm import ServedModelError

    return (RagError, ModelLoadError, PromptFormatError, PromptTooLongError, ServedModelError, ImportError)


__all__ = [
    "ChunkSettingsMismatchError",
    "CorpusError",
    "EmbeddingMismatchError",
    "EmptyFileError",
    "IndexInterrupted",
    "IndexNotFoundError",
    "QuestionsFileError",
    "RagError",
    "UnreadableFileError",
    "user_errors",
]
