"""Result tables: atomic ``.xlsx``/``.csv`` writes and GitHub markdown tables."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

TABLE_COLUMNS = ["instruction", "context", "answer", "abstained", "seconds", "sources", "error"]
# Excel opens a CSV as the system's ANSI code page (CP932 on Japanese Windows) unless it starts with a BOM.
CSV_ENCODING = "utf-8-sig"


def _new_file_mode(path: Path) -> int:
    """The mode ``open(path, "w")`` would give: an existing file's own, else 0o666 minus the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Writes ``path`` via ``write(tmp)`` on a temp file beside it, then ``os.replace``: never half-written.

    The file gets the permissions a plain write would give (``mkstemp`` makes its temp file 0600,
    which would leave reports unreadable to the group when the ``.jsonl`` beside them is not).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _excel_safe(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    value = ILLEGAL_CHARACTERS_RE.sub("", value)
    return value[:32000] + " [truncated]" if len(value) > 32767 else value


def write_table(
    rows: Sequence[Dict[str, Any]],
    path: Union[str, Path],
    columns: Sequence[str] = TABLE_COLUMNS,
    sheets: Optional[Dict[str, Tuple[Sequence[Dict[str, Any]], Sequence[str]]]] = None,
) -> Path:
    """Writes rows to ``.xlsx`` or ``.csv`` atomically (temp file + ``os.replace``).

    CSV is UTF-8 with a BOM, so Excel shows Japanese text correctly; both get the permissions of
    any other file the process writes.

    Args:
        rows: Dicts; missing keys become empty cells.
        path: Target ``.xlsx`` or ``.csv`` file.
        columns: Column order.
        sheets: ``.xlsx`` only: extra sheets, name -> (rows, columns), written before the main one
            is named ``answers``.
    """
    import pandas as pd

    target = Path(path)
    frame = pd.DataFrame([{c: r.get(c, "") for c in columns} for r in rows], columns=list(columns))
    if target.suffix.lower() == ".csv":
        atomic_write(
            target, lambda tmp: frame.to_csv(tmp, index=False, quoting=csv.QUOTE_MINIMAL, encoding=CSV_ENCODING)
        )
        return target

    def write_xlsx(tmp: Path) -> None:
        with pd.ExcelWriter(tmp, engine="openpyxl") as writer:
            for name, (srows, scols) in (sheets or {}).items():
                pd.DataFrame(
                    [{c: _excel_safe(r.get(c, "")) for c in scols} for r in srows], columns=list(scols)
                ).to_excel(writer, sheet_name=name, index=False)
            if rows is not None and (sheets is None or rows):
                frame.map(_excel_safe).to_excel(writer, sheet_name="answers", index=False)

    atomic_write(target, write_xlsx)
    return target


def markdown_table(rows: Sequence[Dict[str, Any]], columns: Sequence[str], max_chars: int = 200) -> str:
    """A GitHub markdown table (cells cut to ``max_chars``, pipes and newlines escaped)."""

    def cell(value: Any) -> str:
        text = "" if value is None else (f"{value:.3g}" if isinstance(value, float) else str(value))
        text = text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")
        return text[: max_chars - 1] + "…" if len(text) > max_chars else text

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


__all__ = ["CSV_ENCODING", "TABLE_COLUMNS", "atomic_write", "markdown_table", "write_table"]
