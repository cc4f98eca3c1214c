"""Every exception llama-unsloth raises, and the set of them a command-line user can fix from the message alone.

One home for them: modules raise these (and re-export the ones they are known by, e.g.
``llama_unsloth.layouts.format.PromptFormatError``), recipes catch :func:`user_errors` and print one line.
"""

from __future__ import annotations

from typing import Optional, Tuple, Type


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
        stats: The :class:`~llama_unsloth.rag.store.IndexStats` of the work committed before the stop.
        files_left: Files not indexed yet (the next run does them).
    """

    def __init__(self, message: str, stats: object = None, files_left: int = 0) -> None:
        super().__init__(message)
        self.stats = stats
        self.files_left = files_left


class ServedModelError(RuntimeError):
    """The model server is unreachable, serves another model, or refused the request."""


class PromptTooLongError(ValueError):
    """A prompt leaves no room for ``max_new_tokens`` within ``max_seq_length``."""


class GenerationOutOfMemoryError(RuntimeError):
    """The GPU ran out of memory while generating; the cache was freed and the model is usable."""


class TrainingMemoryError(RuntimeError):
    """A fine-tune does not fit the GPU's memory (estimated before loading, or out of memory while training);
    the message names a setting that fits."""


class MissingDefaultModelError(ImportError):
    """An offline default model's package is not installed."""


class DatasetError(ValueError):
    """The training data file is missing, empty or not JSON / JSON Lines."""


class HubTokenError(RuntimeError):
    """Pushing to the Hub was asked for but ``HF_TOKEN`` is not set."""


class PromptFormatError(ValueError):
    """A prompt format or a record rendered with it is invalid."""


class ModelLoadError(ValueError):
    """A model could not be found or loaded; the message says what to do."""


class EmbeddingServiceError(RuntimeError):
    """An embedding request failed for good (after the retries that apply).

    Raised by the POV reranker for ``CohereEmbedding`` failures (HTTP errors
    after retries, timeouts, connection errors, malformed answers), and for any
    embedding model that returns the wrong number or shape of vectors. Errors
    of other embedding models' own calls pass through unchanged.

    The message says what failed and what to do; it never contains the API
    key. The original exception is ``__cause__`` (with the key scrubbed from
    its text as well).

    Attributes:
        kind: ``"http_status"``, ``"timeout"``, ``"connection"`` or
            ``"malformed_response"``.
        status_code: HTTP status of the last answer, if any.
        attempts: HTTP attempts made (computed from the SDK / integration retry
            policy for the final status), if known.
        input_type: The Cohere input type sent (``search_query`` /
            ``search_document``), if any.
        n_texts: Texts in the failed request.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        status_code: Optional[int] = None,
        attempts: Optional[int] = None,
        input_type: Optional[str] = None,
        n_texts: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status_code = status_code
        self.attempts = attempts
        self.input_type = input_type
        self.n_texts = n_texts


class OptionError(ValueError):
    """A command-line option has a value outside what it allows; the message says what is allowed."""


class FastDecodeUnavailable(RuntimeError):
    """The fast decode path cannot run here; the message says why (``UnslothLLM`` falls back to ``generate``)."""


class QuestionFailedError(Exception):
    """One question of a batch could not be prepared (encoded, retrieved): its row records this; the others go on."""

    def __init__(self, what: str, cause: Exception) -> None:
        super().__init__(f"{what} ({type(cause).__name__}: {' '.join(str(cause).split()) or 'no message'}).")


class ConfigTypeMismatch(Exception):
    """A ``--config`` value of another type than its field's (``recipes.config`` turns it into an OptionError line).

    Attributes:
        expected: The type in words (``an integer``, ``one of a, b``).
        text: Whether text was one of the types wanted (an unquoted YAML number or yes/no is then the likely slip).
    """

    def __init__(self, expected: str, text: bool = False) -> None:
        super().__init__(expected)
        self.expected, self.text = expected, text


class UncheckableConfigType(Exception):
    """A field type the ``--config`` type check cannot read with confidence: the field's own checks decide."""


class ExportError(ValueError):
    """A GGUF/Ollama export that cannot run (no model, unknown quantization or architecture, no quantizer, no converter)."""


# Exception types whose message alone tells a command-line user what to fix (printed as one line, exit 2).
USER_ERRORS: Tuple[Type[BaseException], ...] = (
    RagError,
    ModelLoadError,
    PromptFormatError,
    PromptTooLongError,
    ServedModelError,
    DatasetError,
    HubTokenError,
    OptionError,
    EmbeddingServiceError,
    TrainingMemoryError,
    ExportError,
    ImportError,
)


def user_errors() -> Tuple[Type[BaseException], ...]:
    """:data:`USER_ERRORS`: the errors a command-line user can fix from the message alone."""
    return USER_ERRORS


__all__ = [
    "ChunkSettingsMismatchError",
    "CorpusError",
    "DatasetError",
    "EmbeddingMismatchError",
    "EmbeddingServiceError",
    "EmptyFileError",
    "ExportError",
    "FastDecodeUnavailable",
    "GenerationOutOfMemoryError",
    "TrainingMemoryError",
    "HubTokenError",
    "IndexInterrupted",
    "IndexNotFoundError",
    "MissingDefaultModelError",
    "ModelLoadError",
    "OptionError",
    "PromptFormatError",
    "PromptTooLongError",
    "QuestionsFileError",
    "RagError",
    "ServedModelError",
    "UnreadableFileError",
    "USER_ERRORS",
    "user_errors",
]
