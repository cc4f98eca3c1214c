"""Training records: a field of any name of its role fills a template variable; clear errors name the field."""

from __future__ import annotations

import pytest

from llama_unsloth.layouts.format import PromptFormatError
from llama_unsloth.layouts.records import (
    ROLE_NAMES,
    ROLE_OF,
    check_record,
    dataset_fields,
    record_value,
    record_values,
)
from tests.llama_unsloth.layouts.users_layouts import ANS, CTX, Q


def test_a_record_field_of_any_name_of_the_role_fills_the_variable() -> None:
    record = {"instruction": Q, "context": CTX, "answer": ANS, "flag": None}
    assert record_value(record, "str_instruction") == Q
    assert record_value(record, "str_context") == CTX
    assert record_value(record, "output") == ANS
    assert record_value(record, "flag") is None  # a null field counts as missing
    assert record_value(record, "persona") is None
    # The variable's own name wins over the other names of its role.
    assert record_value({"answer": "role", "str_answer": "own"}, "str_answer") == "own"


def test_every_name_has_one_role() -> None:
    names = [name for role_names in ROLE_NAMES.values() for name in role_names]
    assert len(names) == len(set(names)) == len(ROLE_OF)


def test_record_values_blank_optional_and_system_and_leave_required_undefined() -> None:
    values = record_values(
        {"instruction": Q}, ["input", "instruction", "persona", "system"], blank=["input"], flag_var="flag"
    )
    assert values == {"input": "", "instruction": Q, "system": "", "flag": ""}


def test_check_record_names_the_field_as_data_files_do() -> None:
    kwargs = {"layout_name": "users", "record_fields": ["str_instruction", "str_context", "str_answer"]}
    with pytest.raises(PromptFormatError, match="train.json, record 3: missing field 'output'") as err:
        check_record({"instruction": Q, "context": CTX}, 3, "train.json", optional_fields=[], **kwargs)
    assert "needs instruction, context, answer" in str(err.value)
    check_record({"instruction": Q, "context": CTX}, 3, "train.json", optional_fields=["str_answer"], **kwargs)
    assert dataset_fields(kwargs["record_fields"], ["str_context"]) == ["instruction", "answer"]
