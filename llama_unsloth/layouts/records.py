"""Training records and a layout's variables: the names each role goes by, a record's values, its checks.

Users' templates and data files name the same thing differently (``instruction``, ``str_instruction``,
``question``): a name is recognised by its role, so a record's field of any of its role's names fills the slot.
"""

from __future__ import annotations

from typing import Any, Collection, Dict, List, Mapping, Sequence, Tuple

from llama_unsloth.errors import PromptFormatError

#: The record flag whose system text is the fallback for unknown flags (reasoning layouts).
DEFAULT_FLAG = "assistant"

#: Variable names a template may use, by role. The first name of each role is the record field the
#: finetune recipe's data files use; the others are accepted in templates and in records.
ROLE_NAMES: Dict[str, Tuple[str, ...]] = {
    "instruction": ("instruction", "str_instruction", "question", "query", "str_question"),
    "input": ("input", "str_input"),
    "context": ("context", "str_context"),
    "reasoning": ("reasoning", "str_reasoning"),
    "output": ("output", "answer", "str_answer", "response", "str_output", "str_response"),
    "flag": ("flag", "str_flag"),
    "system": ("system", "system_prompt", "str_system"),
}
#: The role of each known variable name.
ROLE_OF: Dict[str, str] = {name: role for role, names in ROLE_NAMES.items() for name in names}
#: Kept for code that maps the instruction-context variables to dataset names.
FIELD_ALIASES = {"str_instruction": "instruction", "str_context": "context", "str_answer": "answer"}


def record_value(record: Mapping[str, Any], var: str) -> Any:
    """A record's value for a template variable: its own name first, then the other names of its role.

    Args:
        record: A dataset record.
        var: A template variable name.

    Returns:
        The value, or None when the record has no (non-null) field of that role.
    """
    if var in record and record[var] is not None:
        return record[var]
    for name in ROLE_NAMES.get(ROLE_OF.get(var, ""), ()):
        if record.get(name) is not None:
            return record[name]
    return None


def record_values(
    record: Mapping[str, Any], variables: Sequence[str], *, blank: Collection[str], flag_var: str
) -> Dict[str, Any]:
    """A layout's template variables filled from a record.

    Args:
        record: A dataset record.
        variables: The template's variables that records fill (not the tokenizer's).
        blank: Variables that are empty when the record lacks them; system variables always are.
        flag_var: The variable holding the record's flag, always set (empty without one).

    Returns:
        The values; a missing required field stays undefined, so rendering names it.
    """
    values: Dict[str, Any] = {}
    for var in variables:
        value = record_value(record, var)
        if value is not None:
            values[var] = value
        elif var in blank or ROLE_OF.get(var) == "system":
            values[var] = ""
    flag = record_value(record, flag_var)
    values[flag_var] = "" if flag is None else flag
    return values


def dataset_fields(record_fields: Sequence[str], optional_fields: Sequence[str]) -> List[str]:
    """The record fields a data file needs, in the names data files use (``instruction``, ``answer`` ...)."""
    names = [FIELD_ALIASES.get(var, var) for var in record_fields if var not in optional_fields]
    return list(dict.fromkeys(names))


def check_record(
    record: Any,
    number: int,
    source: str,
    *,
    layout_name: str,
    record_fields: Sequence[str],
    optional_fields: Sequence[str],
) -> None:
    """Raises a clear error when a training record lacks a field or has a non-string value.

    Args:
        record: The record as loaded from JSON.
        number: Its 1-based position in the file, for the message.
        source: The file name, for the message.
        layout_name: The layout's name, for the message.
        record_fields: The fields the layout needs.
        optional_fields: The fields that may be missing.

    Raises:
        PromptFormatError: The record is not an object, lacks a required field, or has a non-string value.
    """
    if not isinstance(record, Mapping):
        raise PromptFormatError(f"{source}, record {number}: expected a JSON object, got {type(record).__name__}.")
    for name in record_fields:
        value = record_value(record, name)
        # A field the record lacks is named as data files name it (instruction, not str_instruction).
        shown = ROLE_NAMES.get(ROLE_OF.get(name, ""), (name,))[0] if name not in record else name
        if value is None:
            if name in optional_fields:
                continue
            raise PromptFormatError(
                f"{source}, record {number}: missing field {shown!r} (format {layout_name!r} needs "
                f"{', '.join(dataset_fields(record_fields, optional_fields))})."
            )
        if not isinstance(value, str):
            raise PromptFormatError(
                f"{source}, record {number}: field {shown!r} must be a string, got {type(value).__name__}."
            )
