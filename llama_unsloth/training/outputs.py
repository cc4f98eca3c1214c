"""The output folder of a run: checked before any model loads, never overwritten without ``--overwrite_output_dir``.

:func:`plan_output_dir` decides, before anything loads, what the run may do with its ``--output_dir``:

* a new or empty folder: write into it;
* a folder that holds an earlier fine-tune (its adapter, ``merged/``, checkpoints, logs, card): refused in one
  line naming ``--overwrite_output_dir``; with the flag, every file of the earlier run is removed just
  before the new run writes (:func:`clear_earlier_run`), so no ``merged/`` of an older model is left beside
  a new adapter;
* a ``--resume_from_checkpoint`` inside the folder: its ``checkpoint-*`` folders are kept (the trainer
  reads one back), the earlier run's other files are replaced;
* a folder holding anything a fine-tune never writes (the user's data, notes, another project): refused,
  flag or not, and nothing is deleted: the flag replaces only an earlier run's own files.

transformers 5 dropped ``TrainingArguments.overwrite_output_dir`` (TRL 1.14's ``SFTConfig`` has none
either), so the flag is ours: :class:`~llama_unsloth.training.arguments.FinetuneSFTConfig` declares it.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

from llama_unsloth.errors import OptionError
from llama_unsloth.training.export import LOSS_PLOT_FILE, MERGED_FOLDER, MODEL_CARD_FILE, TRAIN_LOG_FILE
from llama_unsloth.validation import check_output_location

OUTPUT_FLAG = "--output_dir"
OVERWRITE_FLAG = "--overwrite_output_dir"
RESUME_FLAG = "--resume_from_checkpoint"
PROMPT_FORMAT_FILE = "prompt_format.json"
TRAINER_STATE_FILE = "trainer_state.json"  # what makes a folder a checkpoint the trainer can resume from

# What a run writes at the top of its output folder, by name: the adapter (PEFT), the tokenizer (every
# file name a tokenizer's save_pretrained uses), our layout, log, plot and card, and the trainer's checkpoints.
_RUN_FILES = frozenset(
    {
        "adapter_config.json",
        "adapter_model.safetensors",
        "adapter_model.bin",
        "added_tokens.json",
        "special_tokens_map.json",
        "chat_template.jinja",
        "chat_template.base.jinja",  # the base model's chat template, kept beside the layout's (layouts.chat_template)
        "chat_template.json",
        "merges.txt",
        "spiece.model",
        "training_args.bin",
        PROMPT_FORMAT_FILE,
        TRAIN_LOG_FILE,
        LOSS_PLOT_FILE,
        MODEL_CARD_FILE,
        MERGED_FOLDER,
    }
)
# checkpoint-<step>; tokenizer.json/_config.json/.model, vocab.json/.txt; sentencepiece.bpe.model; the
# merged16.* staging folder a 4-bit merge leaves only if it was killed.
_RUN_PATTERNS = ("checkpoint-*", "tokenizer*", "vocab*", "sentencepiece*.model", "merged16.*")
# Only a run of ours writes these: a folder without one (a downloaded tokenizer or adapter) is not an earlier run.
_RUN_MARKERS = (PROMPT_FORMAT_FILE, TRAIN_LOG_FILE)
# What file browsers and notebooks put into any folder they show: neither counted, nor removed.
_IGNORED = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", ".ipynb_checkpoints"})
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_LISTED = 4  # entries a message names before "and N more"


@dataclass(frozen=True)
class OutputPlan:
    """What the run does with its output folder, decided before any model loads.

    Attributes:
        folder: The ``--output_dir``.
        remove: The earlier run's files and folders, removed by :func:`clear_earlier_run`.
        resume_from: The checkpoint folder the trainer resumes from, or ``None``.
    """

    folder: Path
    remove: Tuple[Path, ...] = ()
    resume_from: Optional[Path] = None


def plan_output_dir(output_dir: Union[str, Path], overwrite: bool = False, resume: Any = None) -> OutputPlan:
    """Checks ``output_dir`` and decides what the run may remove there; nothing is changed yet.

    Args:
        output_dir: The ``--output_dir``; it need not exist.
        overwrite: ``--overwrite_output_dir``: replace an earlier run's files.
        resume: ``--resume_from_checkpoint``: a checkpoint folder, ``True``/``"true"``/``"last"`` for the
            newest ``checkpoint-*`` in ``output_dir``, or ``None``.

    Raises:
        OptionError: One line: the folder cannot be written, holds an earlier run (without ``overwrite``)
            or files a fine-tune never writes, or the checkpoint to resume from is none.
    """
    folder = Path(output_dir)
    check_output_location(folder, OUTPUT_FLAG, folder=True)
    resume_from = resolve_checkpoint(resume, folder)
    entries = _entries(folder)
    if not entries:
        return OutputPlan(folder, (), resume_from)
    foreign = [e for e in entries if not _is_ours(e.name)]
    if foreign or not any(e.name in _RUN_MARKERS or _CHECKPOINT.match(e.name) for e in entries):
        raise OptionError(
            f"{OUTPUT_FLAG} {folder} holds files a fine-tune does not write ({_names(foreign or entries)}): "
            f"choose another folder, or move them out. {OVERWRITE_FLAG} replaces only an earlier run's own "
            "files; nothing was deleted."
        )
    resuming_here = resume_from is not None and _inside(resume_from, folder)
    if not (overwrite or resuming_here):
        has_checkpoints = any(_CHECKPOINT.match(e.name) for e in entries)
        resume_hint = f", {RESUME_FLAG} last to continue it from its newest checkpoint" if has_checkpoints else ""
        raise OptionError(
            f"{OUTPUT_FLAG} {folder} already holds an earlier run ({_names(entries)}): pass {OVERWRITE_FLAG} "
            f"to replace it{resume_hint}, or choose another folder."
        )
    # A resume reads its checkpoint back from here, so the checkpoints stay; the rest is the earlier run's result.
    remove = [e for e in entries if not (resuming_here and _CHECKPOINT.match(e.name))]
    return OutputPlan(folder, tuple(remove), resume_from)


def clear_earlier_run(plan: OutputPlan) -> None:
    """Removes the earlier run's files that :func:`plan_output_dir` listed, just before the new run writes."""
    for path in plan.remove:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def resolve_checkpoint(resume: Any, output_dir: Union[str, Path]) -> Optional[Path]:
    """The checkpoint folder ``--resume_from_checkpoint`` names, checked; ``None`` when not resuming.

    Args:
        resume: A checkpoint folder; ``True``, ``"true"`` or ``"last"`` for the newest ``checkpoint-<step>``
            in ``output_dir``; ``None``, ``False``, ``""`` or ``"false"`` for no resume.
        output_dir: The ``--output_dir``, searched for ``"last"``.

    Raises:
        OptionError: No such checkpoint, or a folder without the trainer's ``trainer_state.json``.
    """
    text = str(resume).strip() if resume is not None else ""
    if resume is False or text.lower() in ("", "false", "none"):
        return None
    if resume is True or text.lower() in ("true", "last"):
        steps = [(int(m.group(1)), e) for e in _entries(Path(output_dir)) if (m := _CHECKPOINT.match(e.name))]
        found = [entry for _, entry in sorted(steps, reverse=True) if (entry / TRAINER_STATE_FILE).is_file()]
        if not found:
            raise OptionError(
                f"{RESUME_FLAG} {text}: {output_dir} holds no checkpoint-<step> folder to resume from "
                "(the trainer writes them with --save-strategy steps)."
            )
        return found[0]
    checkpoint = Path(text).expanduser()
    if not (checkpoint / TRAINER_STATE_FILE).is_file():
        raise OptionError(
            f"{RESUME_FLAG} {text} is not a trainer checkpoint (no {TRAINER_STATE_FILE} in it): give a "
            "checkpoint-<step> folder a run saved with --save-strategy steps, or 'last' for the newest."
        )
    return checkpoint


def _entries(folder: Path) -> List[Path]:
    """The folder's entries, sorted, without the ones file browsers add; ``[]`` when it does not exist."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name not in _IGNORED)


def _is_ours(name: str) -> bool:
    return name in _RUN_FILES or any(fnmatch(name, pattern) for pattern in _RUN_PATTERNS)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _names(entries: Sequence[Path]) -> str:
    """``a.json, merged/, b.txt and 3 more``: what a message shows of a folder."""
    # What tells one run from another first: merged/, the adapter, the log; then the rest by name.
    first = {MERGED_FOLDER: 0, "adapter_model.safetensors": 1, TRAIN_LOG_FILE: 2}
    entries = sorted(entries, key=lambda e: (first.get(e.name, len(first)), e.name))
    shown = [e.name + ("/" if e.is_dir() else "") for e in entries[:_LISTED]]
    more = f" and {len(entries) - _LISTED} more" if len(entries) > _LISTED else ""
    return ", ".join(shown) + more


__all__ = [
    "OVERWRITE_FLAG",
    "OutputPlan",
    "clear_earlier_run",
    "plan_output_dir",
    "resolve_checkpoint",
]
