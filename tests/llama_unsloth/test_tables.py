"""llama_unsloth.tables: result tables are replaced atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_result_tables_are_never_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    import pandas as pd

    from llama_unsloth.tables import write_table

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
