"""Reading users' text files whatever tool saved them: encoding detection, binary and empty files.

Our users' folders mix Japanese and English, partly saved by Windows tools in Shift-JIS/CP932, and
their question lists come out of Excel (CP932 CSV). :func:`read_text` decodes one file:

1. a byte-order mark decides (UTF-8, UTF-16, UTF-32);
2. otherwise strict UTF-8 (by far the most common; detectors can mislabel short UTF-8 texts);
3. otherwise `charset-normalizer <https://github.com/jawah/charset_normalizer>`_ ranks candidate
   encodings. On short Japanese texts its first guess is sometimes a Chinese or Korean codec (EUC-JP
   read as Big5); a Japanese text nearly always holds kana, so among its candidates the one that yields
   clearly the most kana wins.

A file that is binary (NUL bytes, control characters) or fits no encoding raises
:class:`~llama_unsloth.errors.UnreadableFileError`; an empty (or whitespace-only) file raises
:class:`~llama_unsloth.errors.EmptyFileError`. Both carry a short ``reason`` for summaries.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

from llama_unsloth.errors import EmptyFileError, UnreadableFileError

# Longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
_BOMS: Tuple[Tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Codecs charset-normalizer names that have a Windows superset users' files really are in:
# Windows "Shift-JIS" is CP932 (NEC/IBM extensions such as ① and ～ fail strict shift_jis).
_SUPERSETS = {"shift_jis": "cp932", "shift_jis_2004": "cp932", "shift_jisx0213": "cp932"}
_KANA = re.compile(r"[\u3041-\u3096\u30a1-\u30fa\u30fc]")
# C0/C1 controls other than tab, newline, vertical tab, form feed, carriage return; U+FFFD replacement.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\ufffd]")
# More than this share of control characters: not text (a binary file some codec happens to map).
MAX_CONTROL_SHARE = 0.01


@dataclass(frozen=True)
class DecodedText:
    """A decoded file.

    Attributes:
        text: The text (a leading BOM removed, newlines as in the file).
        encoding: The codec that decoded it (``utf-8``, ``cp932``, ``euc_jis_2004``, ``utf-16`` ...).
    """

    text: str
    encoding: str


def _control_share(text: str) -> float:
    return len(_CONTROL.findall(text)) / max(1, len(text))


def decode_bytes(data: bytes, name: str = "<bytes>") -> DecodedText:
    """Decodes a text file's bytes in whatever encoding they are in.

    Args:
        data: The file's bytes.
        name: The file name, for messages.

    Raises:
        EmptyFileError: No bytes, or only whitespace.
        UnreadableFileError: Binary data, or no encoding fits.
    """
    if not data.strip():
        raise EmptyFileError(f"{name}: the file is empty.", reason="empty")
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError as err:
                raise UnreadableFileError(
                    f"{name}: starts with a {codec} byte-order mark but is not valid {codec} ({err.reason} at byte {err.start}).",
                    reason=f"invalid {codec}",
                ) from err
            return _checked(text, codec, name)
    if b"\x00" not in data:
        try:
            return _checked(data.decode("utf-8"), "utf-8", name)
        except UnicodeDecodeError:
            pass
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        binary = b"\x00" in data or _looks_binary(data)
        raise UnreadableFileError(
            f"{name}: {'binary data, not text' if binary else 'no text encoding fits its bytes'}.",
            reason="binary" if binary else "undecodable",
        )
    best = matches[0]
    kana = [len(_KANA.findall(str(m))) for m in matches]
    top = max(range(len(matches)), key=lambda i: (kana[i], -i))
    # Switch only on a clear margin: Chinese text decoded some other way can show a few stray kana.
    if kana[top] > 2 * kana[0] and kana[top] >= 2:
        best = matches[top]
    codec = _SUPERSETS.get(best.encoding, best.encoding)
    try:
        text = data.decode(codec)
    except UnicodeDecodeError:
        text, codec = str(best), best.encoding
    return _checked(text, codec, name)


def _looks_binary(data: bytes) -> bool:
    head = data[:4096]
    controls = sum(b < 9 or 13 < b < 32 for b in head)
    return controls / max(1, len(head)) > MAX_CONTROL_SHARE


def _checked(text: str, codec: str, name: str) -> DecodedText:
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise EmptyFileError(f"{name}: the file holds only whitespace.", reason="empty")
    if "\x00" in text or _control_share(text) > MAX_CONTROL_SHARE:
        raise UnreadableFileError(
            f"{name}: binary data, not text (control characters after decoding as {codec}).", reason="binary"
        )
    return DecodedText(text, codec)


def read_text(path: Union[str, Path]) -> DecodedText:
    """Reads and decodes one text file (see :func:`decode_bytes`).

    Raises:
        EmptyFileError: The file is empty or whitespace only.
        UnreadableFileError: Binary, undecodable, or the file cannot be read.
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as err:
        raise UnreadableFileError(f"{file}: cannot be read ({err.strerror or err}).", reason="unreadable") from err
    return decode_bytes(data, str(file))


def read_text_or_none(path: Union[str, Path]) -> Tuple[Optional[DecodedText], Optional[str]]:
    """``(decoded, None)`` for a readable text file, ``(None, reason)`` for an empty/binary/undecodable one."""
    try:
        return read_text(path), None
    except (EmptyFileError, UnreadableFileError) as err:
        return None, err.reason


__all__ = ["DecodedText", "MAX_CONTROL_SHARE", "decode_bytes", "read_text", "read_text_or_none"]
