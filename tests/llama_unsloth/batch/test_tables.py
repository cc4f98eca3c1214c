"""llama_unsloth.batch.tables: result tables are replaced atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_result_tables_are_never_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    import pandas as pd

    from llama_unsloth.batch.tables import write_table

    target = tmp_path / f"answers{suffix}"
    rows = [{"instruction": "Q1", "answer": "A1"}, {"instruction": "Q2", "answer": "A2"}]
    write_table(rows, target)
    before = target.read_bytes()

    def crash_midway(*args: Any, **kwargs: Any) -> None:
        path = args[1] if suffix == ".csv" else args[0]
        Path(path).write_text("instruction,context,ans")  # a partial file, then the process dies
        raise KeyboardInterrupt

    if suffix == ".csv":
        monkeypatch.setattr(pd.DataFrame, "to_csv", crash_midway)
    else:
        monkeypatch.setattr(pd, "ExcelWriter", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        write_table(rows + [{"instruction": "Q3", "answer": "A3"}], target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_tables_get_normal_permissions_and_csv_opens_japanese_in_excel(tmp_path: Path) -> None:
    import os

    import pandas as pd

    from llama_unsloth.batch.tables import write_table

    rows = [
        {"instruction": "メルコスールを設立した国は？", "answer": "アルゼンチン、ブラジル、パラグアイ、ウルグアイ。"}
    ]
    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.jsonl"
        plain.write_text("{}\n", encoding="utf-8")  # how the .jsonl beside the tables is written
        for name in ("a.csv", "a.xlsx"):
            write_table(rows, tmp_path / name)
            assert (tmp_path / name).stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o644, name
        os.chmod(tmp_path / "a.csv", 0o640)  # a file the user restricted keeps its mode when rewritten
        write_table(rows, tmp_path / "a.csv")
        assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    data = (tmp_path / "a.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    assert pd.read_csv(tmp_path / "a.csv", encoding="utf-8-sig")["answer"].tolist() == [rows[0]["answer"]]
    assert list(pd.read_excel(tmp_path / "a.xlsx").columns) == [
        "instruction",
        "context",
        "answer",
        "abstained",
        "seconds",
        "sources",
        "error",
    ]
