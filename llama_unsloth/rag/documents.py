"""The documents an index is built from: ``.txt``/``.md`` files under a folder, read whatever their encoding.

Files are decoded by :mod:`llama_unsloth.text_files` (UTF-8, UTF-16, Shift-JIS/CP932, EUC-JP ...);
empty, binary and undecodable files are marked as skipped, with the reason, rather than failing the run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

from llama_unsloth.errors import CorpusError

DOC_EXTENSIONS = (".txt", ".md")


def list_documents(folder: Union[str, Path], extensions: Sequence[str] = DOC_EXTENSIONS) -> List[Path]:
    """The ``.txt``/``.md`` files under ``folder`` (recursive, sorted, hidden entries skipped).

    Raises:
        CorpusError: The folder does not exist or holds no such file.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CorpusError(
            f"Documents folder {str(folder)!r} does not exist (or is not a folder). Pass --input-dir <folder>."
        )
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in extensions
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise CorpusError(f"{str(folder)!r} holds no {'/'.join(extensions)} files (searched recursively).")
    return files


@dataclass
class DocumentRead:
    """One document as :func:`read_documents` found it.

    Attributes:
        path: The file.
        key: Its absolute path (how the collection keys its chunks).
        name: Its path relative to the documents folder (for summaries).
        digest: SHA-256 of its bytes.
        text: The decoded text; ``None`` when skipped.
        encoding: The codec that decoded it.
        skip_reason: ``empty``, ``binary``, ``undecodable`` or ``unreadable`` when skipped.
    """

    path: Path
    key: str
    name: str
    digest: str
    text: Optional[str]
    encoding: Optional[str]
    skip_reason: Optional[str]


def read_documents(
    folder: Union[str, Path], warn: Optional[Callable[[str], None]] = None, progress: bool = False
) -> List[DocumentRead]:
    """Reads and decodes every document under ``folder`` (see :func:`list_documents`).

    Binary and undecodable files get a one-line warning through ``warn``; empty ones are only marked.

    Raises:
        CorpusError: The folder does not exist, holds no document, or no document is readable text.
    """
    from tqdm.auto import tqdm

    root = Path(folder).expanduser().resolve()
    reads = [
        _read_document(path, root, warn)
        for path in tqdm(list_documents(root), desc="Reading files", unit="file", disable=not progress)
    ]
    if all(r.text is None for r in reads):
        listing = ", ".join(f"{r.name} ({r.skip_reason})" for r in reads[:10]) + (" ..." if len(reads) > 10 else "")
        raise CorpusError(
            f"{str(folder)!r} holds no readable text file: {listing}. Save the documents as text (UTF-8, Shift-JIS, EUC-JP, UTF-16 ...)."
        )
    return reads


def _read_document(path: Path, root: Path, warn: Optional[Callable[[str], None]]) -> DocumentRead:
    """One file read and decoded, or marked skipped with its reason (and a warning for unreadable ones)."""
    from llama_unsloth.errors import EmptyFileError, UnreadableFileError
    from llama_unsloth.text_files import decode_bytes

    name = str(path.relative_to(root))
    text: Optional[str]
    encoding: Optional[str]
    reason: Optional[str]
    try:
        data = path.read_bytes()
    except OSError as err:
        data, text, encoding, reason = b"", None, None, "unreadable"
        if warn:
            warn(f"warning: skipped {path}: cannot be read ({err.strerror or err}).")
    else:
        try:
            decoded = decode_bytes(data, str(path))
            text, encoding, reason = decoded.text, decoded.encoding, None
        except EmptyFileError:
            text, encoding, reason = None, None, "empty"
        except UnreadableFileError as err:
            text, encoding, reason = None, None, err.reason
            if warn:
                warn(f"warning: skipped {err}")
    return DocumentRead(path, str(path), name, hashlib.sha256(data).hexdigest(), text, encoding, reason)


__all__ = ["DOC_EXTENSIONS", "DocumentRead", "list_documents", "read_documents"]
