"""llama_unsloth.training.data: records read and checked before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_unsloth.layouts import PromptFormat, PromptFormatError
from llama_unsloth.training import DatasetError, check_records, file_sha256, read_records


def test_read_records_accepts_json_arrays_and_json_lines(tmp_path: Path) -> None:
    records = [{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "input": "d", "output": "e"}]
    array = tmp_path / "a.json"
    array.write_text(json.dumps(records, indent=2))
    lines = tmp_path / "a.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    assert read_records(array) == records == read_records(lines)
    assert len(file_sha256(array)) == 64 and file_sha256(array) != file_sha256(lines)


def test_read_records_rejects_a_wrapper_object_and_a_missing_file(tmp_path: Path) -> None:
    wrapper = tmp_path / "w.json"
    wrapper.write_text(json.dumps({"data": [{"instruction": "a"}]}))
    with pytest.raises(DatasetError, match="one JSON object, not a list of records"):
        read_records(wrapper)
    with pytest.raises(DatasetError, match="does not exist"):
        read_records(tmp_path / "nope.json")


def test_check_records_names_file_record_and_field() -> None:
    fmt = PromptFormat.get("instruction-context")
    good = {"instruction": "q", "context": "c", "answer": "a"}
    check_records([good, good], fmt, "f.json")
    with pytest.raises(PromptFormatError, match=r"f\.json, record 2: missing field 'context'"):
        check_records([good, {"instruction": "q", "answer": "a"}], fmt, "f.json")
    with pytest.raises(PromptFormatError, match=r"record 1: expected a JSON object"):
        check_records(["just text"], fmt, "f.json")
