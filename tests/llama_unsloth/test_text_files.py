"""llama_unsloth.text_files: users' files decoded whatever tool saved them; binary and empty files refused."""

from __future__ import annotations

import codecs
import os
from pathlib import Path

import pytest

# A paragraph of the kind our users index: Japanese with Latin names, digits and Windows-only characters.
JA = (
    "メルコスール（南米南部共同市場）は、1991年のアスンシオン条約により設立された。"
    "原加盟国はアルゼンチン、ブラジル、パラグアイ、ウルグアイの4か国である。\n"
    "域内関税は段階的に撤廃されたが、対外共通関税には多くの例外が残っている。"
)
# CP932-only characters (NEC special / IBM extensions): strict Shift-JIS cannot encode them.
JA_CP932 = JA + "\n①域内貿易～②対外関税（髙橋）"


@pytest.mark.parametrize(
    "codec, text",
    [
        ("shift_jis", JA),
        ("cp932", JA_CP932),
        ("euc_jp", JA),
        ("utf-16", JA),  # with BOM, as Windows Notepad's "Unicode"
        ("utf-16-le", JA),  # without BOM
        ("utf-8-sig", JA),
        ("utf-8", JA),
    ],
)
def test_japanese_text_is_read_in_every_encoding_users_have(tmp_path: Path, codec: str, text: str) -> None:
    from llama_unsloth.text_files import read_text

    path = tmp_path / f"{codec}.txt"
    path.write_bytes(text.encode(codec))
    decoded = read_text(path)
    assert decoded.text == text
    assert not decoded.text.startswith("\ufeff")


@pytest.mark.parametrize("codec", ["shift_jis", "euc_jp"])
def test_short_japanese_lines_are_not_read_as_chinese_or_korean(codec: str) -> None:
    from llama_unsloth.text_files import decode_bytes

    # charset-normalizer alone reads this EUC-JP line as Big5 ("反中﹜公丹匹允﹝").
    for line in ("はい、そうです。", "日本語のテキスト", "わかりません"):
        assert decode_bytes(line.encode(codec)).text == line


def test_binary_and_empty_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    from llama_unsloth.errors import EmptyFileError, UnreadableFileError
    from llama_unsloth.text_files import read_text, read_text_or_none

    png = tmp_path / "photo.txt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
    noise = tmp_path / "noise.md"
    noise.write_bytes(os.urandom(4096))
    for path in (png, noise):
        with pytest.raises(UnreadableFileError) as err:
            read_text(path)
        assert err.value.reason == "binary" and str(path) in str(err.value)
    for content in (b"", b"  \r\n\t\n", codecs.BOM_UTF8):
        (tmp_path / "empty.txt").write_bytes(content)
        with pytest.raises(EmptyFileError):
            read_text(tmp_path / "empty.txt")
        assert read_text_or_none(tmp_path / "empty.txt") == (None, "empty")


def test_a_text_with_a_few_control_characters_is_still_text() -> None:
    from llama_unsloth.text_files import decode_bytes

    text = "Page 1\fPage 2\tcolumn\r\n" + "plain words " * 100 + "\x1b"
    assert decode_bytes(text.encode("utf-8")).text == text
