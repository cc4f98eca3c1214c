"""Training data: reading and checking records, and turning them into the token ids the trainer sees.

Every record is checked (:func:`check_records`) before any model loads, so a typo in record 900 costs
seconds, not a GPU warm-up. Nothing here imports torch, transformers or trl at module import.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from llama_unsloth.errors import DatasetError, PromptFormatError
from llama_unsloth.layouts import PromptFormat


def read_records(path: str | Path) -> List[Any]:
    """Reads a JSON array or a JSON Lines file into a list of records, with clear errors.

    Args:
        path: The data file.

    Raises:
        DatasetError: The file is missing, empty, not JSON / JSON Lines, or holds no records.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"Data file {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path} is not a UTF-8 text file (JSON or JSON Lines expected): {err}.") from None
    if not text.strip():
        raise DatasetError(f"{path} is empty: it holds no training records.")
    stripped = text.lstrip()
    records: List[Any]
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(
                f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}."
            ) from None
        records = list(data)
    else:
        records = []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DatasetError(
                    f"{path} is neither a JSON array nor JSON Lines: line {line_number} is not JSON "
                    f"({err.msg}, column {err.colno})."
                ) from None
        if len(records) == 1 and isinstance(records[0], Mapping) and not _looks_like_record(records[0]):
            raise DatasetError(
                f"{path} holds one JSON object, not a list of records: write a JSON array [{{...}}, ...] "
                "or one record per line (JSON Lines)."
            )
    if not records:
        raise DatasetError(f"{path} holds no training records.")
    return records


def _looks_like_record(obj: Mapping[str, Any]) -> bool:
    # A lone object whose values are all lists/dicts is a wrapper ({"data": [...]}), not a record.
    return any(not isinstance(v, (list, dict)) for v in obj.values())


def check_records(records: Sequence[Any], prompt_format: PromptFormat, source: str) -> None:
    """Checks every record has the format's fields as strings; for template formats, renders the first.

    Raises:
        PromptFormatError: Naming the file, the 1-based record number and the field.
    """
    for number, record in enumerate(records, start=1):
        prompt_format.check_record(record, number, source)
    if not prompt_format.is_chat:
        try:
            prompt_format.render_training(records[0], eos_token="")
        except PromptFormatError as err:
            raise PromptFormatError(f"{source}, record 1: {err}") from None


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def render_text(record: Mapping[str, Any], prompt_format: PromptFormat, tokenizer: Any) -> str:
    """One training text: the layout filled with the record, ending with the tokenizer's EOS (never twice)."""
    return prompt_format.render_training(record, eos_token=tokenizer.eos_token or "", tokenizer=tokenizer)


def tokenize_record(
    record: Mapping[str, Any], prompt_format: PromptFormat, tokenizer: Any, max_length: Optional[int] = None
) -> Dict[str, List[int]]:
    """Token ids the trainer sees for one record.

    The prompt part is tokenized by :func:`~llama_unsloth.layouts.format.encode_prompt`, the function
    ``UnslothLLM`` uses for ``generate``, and the answer part after it without special tokens: the ids up
    to where the answer starts are the ids inference feeds the model, with one BOS, and EOS is appended
    only as the layout says (TRL would otherwise add a BOS to text that already has one, and an EOS to a
    layout that writes its own end marker).

    Returns:
        ``input_ids`` and ``completion_mask`` (1 from where the answer starts).
    """
    from llama_unsloth.layouts import encode_prompt, encode_training

    prompt, completion = prompt_format.split_training(record, eos_token=tokenizer.eos_token or "", tokenizer=tokenizer)
    ids = encode_training(tokenizer, prompt, completion)
    n_prompt = len(encode_prompt(tokenizer, prompt)) if prompt else 0
    if max_length is not None:
        ids = ids[:max_length]
    return {"input_ids": ids, "completion_mask": [0] * min(n_prompt, len(ids)) + [1] * max(0, len(ids) - n_prompt)}


def to_text_dataset(
    path: str | Path, prompt_format: PromptFormat, tokenizer: Any, max_length: Optional[int] = None
) -> Any:
    """Loads the data file with ``datasets`` and maps every record to its training token ids.

    The dataset holds ``input_ids`` (see :func:`tokenize_record`) and ``completion_mask``; TRL's
    ``SFTTrainer`` takes it as already tokenized and trains on the whole text, as our users' notebooks do.

    Raises:
        DatasetError: ``datasets`` cannot read the file (e.g. a field changes type between records).
    """
    import datasets

    datasets.disable_progress_bars()
    try:
        dataset = datasets.load_dataset("json", data_files=str(path), split="train")
    except Exception as err:  # pyarrow schema errors, mostly
        raise DatasetError(f"datasets could not read {path}: {type(err).__name__}: {err}") from err
    return dataset.map(
        lambda record: tokenize_record(record, prompt_format, tokenizer, max_length),
        remove_columns=dataset.column_names,
        load_from_cache_file=False,
    )


__all__ = ["check_records", "file_sha256", "read_records", "render_text", "to_text_dataset", "tokenize_record"]
