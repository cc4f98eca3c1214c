"""The docs name tests that exist: every ``tests/...py`` path and ``test_...`` name in README.md and docs/*.md.

A doc row that points at a moved or renamed test proves nothing; this test lists every such name at once.

What counts as a reference (in any text, code spans included):

* a path ``tests/<...>.py`` (the file must exist) or ``tests/<...>/`` (the folder must exist);
* ``tests/<...>.py::test_name``: the function (or class) must be defined in that file;
* ``::test_name`` after such a path on the same line: defined in that line's last path;
* a bare ``test_name`` or ``::test_name`` with no path before it on its line: defined in some ``tests/**/*.py``;
* a bare file name ``test_name.py``: some file of that name exists under ``tests/``.

Placeholders such as ``tests/recipes/test_gpu_<arch>.py`` or ``test_*.py`` are not references.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

_REFERENCE = re.compile(
    r"(?P<path>(?<![\w/.-])tests/[\w./-]*?\.py)(?![\w<*{])(?:::(?P<path_name>\w+))?"
    r"|(?P<folder>(?<![\w/.-])tests/(?:[\w.-]+/)*)(?![\w<*{.-])"
    r"|(?P<base>(?<![\w/.-])test_\w+\.py)(?![\w<*{])"
    r"|::(?P<cont_name>test_\w+)(?![\w<*{])"
    r"|(?P<name>(?<![\w/.:-])test_\w+)(?![\w<*{.-])"
)
_DEFINITION = re.compile(r"^[ \t]*(?:async[ \t]+def|def|class)[ \t]+(\w+)", re.MULTILINE)


def doc_files() -> List[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def references(text: str) -> Iterator[Tuple[int, str, str, str]]:
    """``(line, kind, path, name)`` for every test named in ``text``; kind is file, folder, base, name."""
    for number, line in enumerate(text.splitlines(), start=1):
        last_path = ""
        for match in _REFERENCE.finditer(line):
            if match["path"]:
                last_path = match["path"]
                if match["path_name"]:
                    yield number, "name", last_path, match["path_name"]
                else:
                    yield number, "file", last_path, ""
            elif match["folder"]:
                yield number, "folder", match["folder"], ""
            elif match["base"]:
                yield number, "base", match["base"], ""
            elif match["cont_name"]:
                yield number, "name", last_path, match["cont_name"]
            else:
                yield number, "name", "", match["name"]


def _test_tree() -> Tuple[Dict[str, Set[str]], Set[str]]:
    """Names defined per tests/ file (relative path -> names), and every file name under tests/."""
    defined: Dict[str, Set[str]] = {}
    for path in TESTS.rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        defined[path.relative_to(ROOT).as_posix()] = set(_DEFINITION.findall(text))
    return defined, {Path(p).name for p in defined}


def missing_references(docs: List[Path]) -> List[str]:
    """One line per reference in ``docs`` to a test that does not exist, saying where the name is defined now."""
    defined, basenames = _test_tree()
    homes: Dict[str, List[str]] = {}
    for path, names in sorted(defined.items()):
        for name in names:
            homes.setdefault(name, []).append(path)

    def now(name: str) -> str:
        return f"; it is defined in {', '.join(homes[name])}" if name in homes else "; it is defined nowhere"

    missing = []
    for doc in docs:
        label = doc.relative_to(ROOT).as_posix() if doc.is_relative_to(ROOT) else doc.name
        for line, kind, path, name in references(doc.read_text(encoding="utf-8")):
            where = f"{label}:{line}"
            if kind == "file" and path not in defined:
                missing.append(f"{where}: {path} (no such file)")
            elif kind == "folder" and not (ROOT / path).is_dir():
                missing.append(f"{where}: {path} (no such folder)")
            elif kind == "base" and path not in basenames:
                missing.append(f"{where}: {path} (no file of that name under tests/)")
            elif kind == "name" and path and path not in defined:
                missing.append(f"{where}: {path}::{name} (no such file{now(name)})")
            elif kind == "name" and path and name not in defined[path]:
                missing.append(f"{where}: {path}::{name} (not defined in that file{now(name)})")
            elif kind == "name" and not path and name not in homes:
                missing.append(f"{where}: {name} (defined in no tests/**/*.py)")
    return missing


def test_every_test_the_docs_name_exists() -> None:
    missing = missing_references(doc_files())
    assert not missing, (
        f"{len(missing)} test name(s) in the docs do not exist (moved or renamed? point the docs at the test that "
        "proves the row now):\n  " + "\n  ".join(missing)
    )


def test_the_docs_name_tests_at_all() -> None:
    # A regex that stopped matching would pass the test above vacuously.
    found = [r for r in references((ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")) if r[1] == "name"]
    assert len(found) >= 50, len(found)


def test_reference_parsing() -> None:
    text = (
        "| row | `tests/a/test_x.py::test_one`, `::test_two`, `tests/b/test_y.py` |\n"
        "see test_three and `::test_four`; files test_z.py, folder tests/a/\n"
        "placeholders: tests/recipes/test_gpu_<arch>.py, test_*.py, test_gpu_<arch>; pytest_configure, "
        "make test-gpu\n"
    )
    assert list(references(text)) == [
        (1, "name", "tests/a/test_x.py", "test_one"),
        (1, "name", "tests/a/test_x.py", "test_two"),
        (1, "file", "tests/b/test_y.py", ""),
        (2, "name", "", "test_three"),
        (2, "name", "", "test_four"),
        (2, "base", "test_z.py", ""),
        (2, "folder", "tests/a/", ""),
    ]


def test_missing_names_are_all_listed(tmp_path: Path) -> None:
    fake = tmp_path / "fake.md"
    fake.write_text(
        "`tests/test_docs.py::test_reference_parsing`, `::test_no_such_one`\n"
        "`tests/nowhere/test_gone.py`, test_docs.py, test_never_defined_anywhere, tests/test_docs.py::missing\n"
        "tests/nowhere/ and no_test.py, tests/nowhere/test_gone.py::test_reference_parsing\n",
        encoding="utf-8",
    )
    assert missing_references([fake]) == [
        "fake.md:1: tests/test_docs.py::test_no_such_one (not defined in that file; it is defined nowhere)",
        "fake.md:2: tests/nowhere/test_gone.py (no such file)",
        "fake.md:2: test_never_defined_anywhere (defined in no tests/**/*.py)",
        "fake.md:2: tests/test_docs.py::missing (not defined in that file; it is defined nowhere)",
        "fake.md:3: tests/nowhere/ (no such folder)",
        "fake.md:3: tests/nowhere/test_gone.py::test_reference_parsing (no such file; it is defined in tests/test_docs.py)",
    ]
