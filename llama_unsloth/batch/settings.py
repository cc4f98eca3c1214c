"""The settings that make a batch run's answers what they are, kept beside its JSONL so a resume never mixes them.

``<out>.settings.json`` records the model (its name and a fingerprint of its files, or the server's model and
address), the layout, RAG on/off and the retrieval settings, the generation settings and the embedding model.
It is written atomically before the first answer. A later run into the same output compares its own settings
with it: a difference is one line naming what differs and :data:`FRESH_FLAG`; the same settings resume. Each
check compares only the keys both sides know, so a recipe can refuse with what its options tell before any model
or index loads, and :func:`~llama_unsloth.batch.runner.run_batch` checks again once the index and model are there.

An output written before settings were recorded (no settings file) is adopted with one warning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from llama_unsloth.batch.answers import read_answers_jsonl
from llama_unsloth.batch.tables import atomic_write
from llama_unsloth.errors import RagError
from llama_unsloth.models import folder_fingerprint

logger = logging.getLogger(__name__)

FRESH_FLAG = "--fresh"
SETTINGS_SUFFIX = ".settings.json"
# LLM fields that change what is generated.
GENERATION_FIELDS = ("max_new_tokens", "max_seq_length", "temperature", "top_p", "generate_kwargs", "stop")
# Postprocessor fields that change speed only, or are objects recorded elsewhere (the embedding model).
_NOT_SETTINGS = {"callback_manager", "embed_model", "cache_size"}


def settings_path(jsonl: Path) -> Path:
    """``answers.jsonl`` -> ``answers.settings.json`` (beside it)."""
    return jsonl.with_name(jsonl.stem + SETTINGS_SUFFIX)


def model_identity(name: str, api_base: Optional[str] = None, served_model: Optional[str] = None) -> Dict[str, Any]:
    """``model`` and ``model_fingerprint`` for a model folder, a hub name, or a model on a server; nothing loads.

    Args:
        name: The folder or hub name (for a served model: the local folder its tokenizer and layout come from).
        api_base: The server's address, for a served model.
        served_model: The model name the server serves.
    """
    path = Path(name).expanduser()
    local = path.is_dir()
    # What the folder holds (weights, configs, prompt_format.json: content, not size, so a re-trained adapter of
    # the same shape is another model), hashed once and cached; its subfolders (merged/, checkpoints) are not it.
    fingerprint = (folder_fingerprint(path, subfolders=False) or str(path.resolve())) if local else name
    if api_base:
        # The weights are the server's: what it serves, and where; the local folder adds the layout it holds.
        served = f"{served_model or name} @ {api_base.rstrip('/')}"
        return {"model": served, "model_fingerprint": f"{served} ({fingerprint})" if local else served}
    return {"model": str(path.resolve()) if local else name, "model_fingerprint": fingerprint}


def layout_settings(layout: Any) -> Optional[Dict[str, Any]]:
    """A ``PromptFormat`` as the dictionary it saves (``None`` stays ``None``)."""
    if layout is None:
        return None
    return _jsonable(asdict(layout) if is_dataclass(layout) and not isinstance(layout, type) else layout)


def llm_settings(llm: Any) -> Dict[str, Any]:
    """The settings a loaded LLM answers with: model, layout and generation (what the object has of them)."""
    out: Dict[str, Any] = {}
    name = getattr(llm, "model_name", None)
    if name:
        out.update(model_identity(str(name), getattr(llm, "api_base", None), getattr(llm, "served_model", None)))
    layout = getattr(llm, "format", None)
    if layout is not None and not callable(layout):
        out["layout"] = layout_settings(layout)
    for field in GENERATION_FIELDS:
        if hasattr(llm, field):
            out[field] = _jsonable(getattr(llm, field))
    return out


def retrieval_settings(index: Any, postprocessors: Sequence[Any], similarity_top_k: Optional[int]) -> Dict[str, Any]:
    """RAG on/off, chunks retrieved, each postprocessor's settings and the embedding model, from the objects."""
    if index is None:
        return {"rag": False}
    from llama_unsloth.models import embed_fingerprint, embed_model_name
    from llama_unsloth.rag import default_top_k

    out: Dict[str, Any] = {
        "rag": True,
        "similarity_top_k": similarity_top_k or default_top_k(postprocessors),
        "postprocessors": [_postprocessor_settings(p) for p in postprocessors],
    }
    embed_model = getattr(index, "_embed_model", None)  # VectorStoreIndex keeps the model it queries with there
    if embed_model is not None:
        # What the model is, not where it lies: the same model in a re-created venv resumes.
        out["embed_model"] = embed_model_name(embed_model)
        fingerprint = embed_fingerprint(embed_model)
        if fingerprint is not None:
            out["embed_fingerprint"] = fingerprint
    return out


def _postprocessor_settings(post: Any) -> Dict[str, Any]:
    fields = getattr(type(post), "model_fields", {})
    values = {name: getattr(post, name, None) for name in fields if name not in _NOT_SETTINGS}
    return {"class": type(post).__name__, **_jsonable(values)}


def _jsonable(value: Any) -> Any:
    """``value`` as JSON would give it back (enums, tuples and other objects by their text)."""
    return json.loads(json.dumps(value, ensure_ascii=False, default=lambda v: getattr(v, "value", str(v))))


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    """What differs, as ``max_new_tokens 64 -> 128``, over the keys both sides know.

    The model is named by its path or name, but it is the same model when its fingerprint is the same (a folder
    moved elsewhere); a folder whose files changed under the same name says so.
    """
    shared = [key for key in current if key in recorded]
    out: List[str] = []
    for key in shared:
        if key == "model" or recorded[key] == current[key]:
            continue
        if key == "model_fingerprint":
            before, after = recorded.get("model"), current.get("model")
            out.append(f"model {before} -> {after}" if before != after else f"model {after}: its files changed")
            continue
        out.extend(_value_differences(key, recorded[key], current[key]))
    if "model_fingerprint" not in shared and "model" in shared and recorded["model"] != current["model"]:
        out.append(f"model {recorded['model']} -> {current['model']}")
    return out


def _value_differences(key: str, before: Any, after: Any) -> List[str]:
    if key == "layout" and isinstance(before, dict) and isinstance(after, dict):
        # A layout is many fields of template text: its name says which, or that its text changed.
        names = (before.get("name"), after.get("name"))
        return [f"layout {names[0]} -> {names[1]}" if names[0] != names[1] else f"layout {names[1]}: its text changed"]
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            d
            for sub in {**before, **after}
            for d in _value_differences(f"{key}.{sub}", before.get(sub), after.get(sub))
            if before.get(sub) != after.get(sub)
        ]
    if _is_chain(before) and _is_chain(after) and [p["class"] for p in before] == [p["class"] for p in after]:
        return [d for b, a in zip(before, after) for d in _value_differences(f"{key}.{b['class']}", b, a)]
    shown = (_show(key, before), _show(key, after))
    return [f"{key} changed" if None in shown else f"{key} {shown[0]} -> {shown[1]}"]


def _is_chain(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(p, dict) and "class" in p for p in value)


def _show(key: str, value: Any) -> Optional[str]:
    """A value as the message shows it; ``None`` when too long to read in one line."""
    if key == "rag" and isinstance(value, bool):
        return "on" if value else "off"
    if _is_chain(value):
        return "[" + ", ".join(p["class"] for p in value) + "]" if value else "none"
    if value is None:
        return "none"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 and "\n" not in text else None


class ResumeKey:
    """The settings file of one output: checked before work, written before the first answer.

    Args:
        jsonl: The answers JSONL.
        fresh: Start afresh: the old answers, tables and settings are replaced (removed when the first answer comes).
    """

    def __init__(self, jsonl: Path, fresh: bool = False) -> None:
        self.jsonl, self.path, self.fresh = jsonl, settings_path(jsonl), fresh
        self.recorded = None if fresh else read_settings(self.path)

    def check(self, current: Mapping[str, Any], has_answers: bool) -> None:
        """Refuses ``current`` when ``has_answers`` and the recorded settings differ (one line naming the flag).

        Raises:
            RagError: ``... holds answers made with other settings: max_new_tokens 64 -> 128; ...``.
        """
        if self.fresh or not has_answers or self.recorded is None:
            return
        diff = differences(self.recorded, current)
        if diff:
            raise RagError(
                f"{self.jsonl} holds answers made with other settings: {'; '.join(diff)}. Add {FRESH_FLAG} to replace "
                "them (the old answers and tables are removed), or choose another output."
            )

    def warn_if_unrecorded(self, has_answers: bool) -> None:
        """One warning line when existing answers carry no settings file (written by an earlier version)."""
        if has_answers and not self.fresh and self.recorded is None:
            logger.warning(
                "warning: %s records no settings (written by an earlier version): its answers are resumed as if made "
                "with this run's settings, which are recorded from now on (%s answers everything again).",
                self.jsonl,
                FRESH_FLAG,
            )

    def start(self, current: Mapping[str, Any], stale: Sequence[Path] = ()) -> None:
        """Before the first answer: with ``fresh``, removes the old answers and ``stale`` files; records ``current``."""
        if self.fresh:
            for old in (self.jsonl, *stale):
                old.unlink(missing_ok=True)
        merged = {**(self.recorded or {}), **current}
        if merged != self.recorded:
            write_settings(self.path, merged)
        self.recorded, self.fresh = merged, False


def read_settings(path: Path) -> Optional[Dict[str, Any]]:
    """The recorded settings, or ``None`` when there is no settings file.

    Raises:
        RagError: The file is not a JSON object (edited by hand): the run cannot tell what its answers were made with.
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        data = err
    if not isinstance(data, dict):
        raise RagError(
            f"{path} is not a settings record ({data}): restore it, or add {FRESH_FLAG} to answer everything again."
        )
    return data


def write_settings(path: Path, settings: Mapping[str, Any]) -> None:
    """Writes the settings record atomically (a crash leaves the old one or the new one, never half of one)."""
    text = json.dumps(dict(settings), indent=2, ensure_ascii=False, sort_keys=True) + "\n"

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write(path, write)


def check_resume(jsonl: Path, settings: Mapping[str, Any], fresh: bool = False) -> None:
    """The check a recipe runs before anything loads: ``settings`` (what its options tell) against the record.

    Raises:
        RagError: The output holds answers made with other settings.
    """
    key = ResumeKey(jsonl, fresh)
    key.check(settings, has_answers=bool(key.recorded is not None and read_answers_jsonl(jsonl, warn=False)))


__all__ = [
    "FRESH_FLAG",
    "ResumeKey",
    "check_resume",
    "differences",
    "layout_settings",
    "llm_settings",
    "model_identity",
    "read_settings",
    "retrieval_settings",
    "settings_path",
    "write_settings",
]
