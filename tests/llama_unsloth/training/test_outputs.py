"""llama_unsloth.training.outputs: an output folder is never overwritten without --overwrite_output_dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import pytest

from llama_unsloth.errors import OptionError
from llama_unsloth.training.outputs import clear_earlier_run, plan_output_dir, resolve_checkpoint


def _earlier_run(folder: Path, checkpoints: tuple = ()) -> Path:
    """The files a finished run leaves: adapter, tokenizer, layout, log, plot, card, merged/ and checkpoints."""
    (folder / "merged").mkdir(parents=True)
    (folder / "merged" / "config.json").write_text("{}")
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "prompt_format.json"):
        (folder / name).write_text("{}")
    for name in ("train_log.json", "loss.png", "README.md", "chat_template.jinja"):
        (folder / name).write_text("x")
    for step in checkpoints:
        (folder / f"checkpoint-{step}").mkdir()
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def _snapshot(folder: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_or_empty_folder_is_written_into_and_nothing_is_removed(tmp_path: Path) -> None:
    assert plan_output_dir(tmp_path / "new").remove == ()
    assert not (tmp_path / "new").exists()  # checking creates nothing
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_text("x")  # what a file browser adds does not count
    assert plan_output_dir(tmp_path / "empty").remove == ()


def test_an_earlier_run_is_refused_without_the_flag_and_removed_whole_with_it(tmp_path: Path) -> None:
    out = _earlier_run(tmp_path / "out", checkpoints=(2,))
    before = _snapshot(out)
    with pytest.raises(OptionError, match=r"already holds an earlier run \(merged/, adapter_model") as err:
        plan_output_dir(out)
    assert "--overwrite_output_dir" in str(err.value) and "--resume_from_checkpoint last" in str(err.value)
    assert _snapshot(out) == before
    plan = plan_output_dir(out, overwrite=True)
    assert _snapshot(out) == before  # planning removes nothing: the run clears once its model has loaded
    clear_earlier_run(plan)
    assert list(out.iterdir()) == []


def test_files_a_finetune_never_writes_are_refused_even_with_the_flag(tmp_path: Path) -> None:
    out = _earlier_run(tmp_path / "out")
    (out / "my_data.jsonl").write_text("{}")
    before = _snapshot(out)
    with pytest.raises(OptionError, match=r"holds files a fine-tune does not write \(my_data.jsonl\)") as err:
        plan_output_dir(out, overwrite=True)
    assert "nothing was deleted" in str(err.value) and _snapshot(out) == before
    # A downloaded tokenizer folder: every name is one a run writes, but no run of ours wrote it.
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "README.md"):
        (tokenizer / name).write_text("{}")
    with pytest.raises(OptionError, match="holds files a fine-tune does not write"):
        plan_output_dir(tokenizer, overwrite=True)


def test_a_resume_inside_the_folder_keeps_its_checkpoints_and_replaces_the_rest(tmp_path: Path) -> None:
    out = _earlier_run(tmp_path / "out", checkpoints=(2, 9, 10))
    plan = plan_output_dir(out, resume="last")
    assert plan.resume_from == out / "checkpoint-10"  # by step number, not by name
    clear_earlier_run(plan)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-10", "checkpoint-2", "checkpoint-9"]
    # Given by path (and with the flag too), the checkpoints stay.
    assert plan_output_dir(out, overwrite=True, resume=str(out / "checkpoint-2")).remove == ()


def test_a_checkpoint_that_is_none_is_one_line(tmp_path: Path) -> None:
    assert resolve_checkpoint(None, tmp_path) is None and resolve_checkpoint(False, tmp_path) is None
    with pytest.raises(OptionError, match="holds no checkpoint-<step> folder"):
        resolve_checkpoint(True, tmp_path / "out")
    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(OptionError, match=r"is not a trainer checkpoint \(no trainer_state.json"):
        resolve_checkpoint(str(tmp_path / "checkpoint-3"), tmp_path)


def test_an_output_dir_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    regular = tmp_path / "file.txt"
    regular.write_text("x")
    with pytest.raises(OptionError, match="--output_dir .* lies inside .*file.txt, which is a file"):
        plan_output_dir(regular / "out")
    with pytest.raises(OptionError, match="is a file, not a folder"):
        plan_output_dir(regular)
