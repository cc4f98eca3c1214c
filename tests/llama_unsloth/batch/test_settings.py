"""llama_unsloth.batch.settings: what makes answers what they are, recorded beside them and compared on a resume."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from tests.llama_unsloth.batch.test_runner import StubLLM


def test_differences_name_what_changed_in_one_line_each() -> None:
    from llama_unsloth.batch.settings import differences

    recorded = {
        "model": "/m/a",
        "model_fingerprint": "111",
        "rag": True,
        "max_new_tokens": 64,
        "layout": {"name": "chat", "template": "x"},
        "postprocessors": [{"class": "POVReranker", "top_n": 5, "povs": ["a"]}],
        "embed_model": "minilm",
    }
    current = {
        **recorded,
        "rag": False,
        "max_new_tokens": 128,
        "layout": {"name": "alpaca", "template": "y"},
        "postprocessors": [{"class": "POVReranker", "top_n": 3, "povs": ["a"]}],
        "embed_model": "bge",
    }
    assert differences(recorded, current) == [
        "rag on -> off",
        "max_new_tokens 64 -> 128",
        "layout chat -> alpaca",
        "postprocessors.POVReranker.top_n 5 -> 3",
        "embed_model minilm -> bge",
    ]
    # The same folder moved elsewhere is the same model; the same path with other files is not.
    assert differences(recorded, {**recorded, "model": "/elsewhere/a"}) == []
    assert differences(recorded, {**recorded, "model_fingerprint": "222"}) == ["model /m/a: its files changed"]
    assert differences(recorded, {**recorded, "model": "/m/b", "model_fingerprint": "2"}) == ["model /m/a -> /m/b"]
    # Only keys both sides know are compared (a recipe checks what its options tell before anything loads).
    assert differences(recorded, {"max_new_tokens": 64, "stop": ["x"]}) == []


def test_model_fingerprint_is_what_the_folder_holds_not_where_it_lies(tmp_path: Path, tiny_llama_path: Path) -> None:
    from llama_unsloth.batch.settings import model_identity

    copy = Path(shutil.copytree(tiny_llama_path, tmp_path / "copy"))
    same = model_identity(str(copy))
    assert same["model"] == str(copy.resolve())
    assert same["model_fingerprint"] == model_identity(str(tiny_llama_path))["model_fingerprint"]
    config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    (copy / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}), encoding="utf-8")
    assert model_identity(str(copy))["model_fingerprint"] != same["model_fingerprint"]
    # A re-trained model of the same shape: same file names and sizes, other weights. Not the same model.
    retrained = Path(shutil.copytree(tiny_llama_path, tmp_path / "retrained"))
    weights = retrained / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert model_identity(str(retrained))["model_fingerprint"] != same["model_fingerprint"]
    served = model_identity(str(copy), api_base="http://127.0.0.1:8001/v1/", served_model="nemo")
    assert served["model"] == "nemo @ http://127.0.0.1:8001/v1"
    assert model_identity("org/hub-model") == {"model": "org/hub-model", "model_fingerprint": "org/hub-model"}


def test_a_resume_with_other_settings_is_refused_and_fresh_replaces_everything(tmp_path: Path) -> None:
    from llama_unsloth.batch.runner import run_batch
    from llama_unsloth.errors import RagError

    out = tmp_path / "answers"
    run_batch(StubLLM(), ["A?", "B?"], out, progress=False, settings={"model": "m1", "temperature_note": 1})
    recorded = json.loads((tmp_path / "answers.settings.json").read_text(encoding="utf-8"))
    assert recorded["model"] == "m1" and recorded["rag"] is False and recorded["max_new_tokens"] == 8
    before = (tmp_path / "answers.jsonl").read_bytes()

    longer = StubLLM()
    longer.max_new_tokens = 16
    with pytest.raises(
        RagError, match=r"holds answers made with other settings: max_new_tokens 8 -> 16\. Add --fresh"
    ):
        run_batch(longer, ["A?", "B?", "C?"], out, progress=False, settings={"model": "m1"})
    with pytest.raises(RagError, match="model m1 -> m2"):  # refused before the model loads
        run_batch(lambda: pytest.fail("loaded"), ["A?"], out, progress=False, settings={"model": "m2"})
    assert (tmp_path / "answers.jsonl").read_bytes() == before

    records = run_batch(longer, ["C?"], out, progress=False, settings={"model": "m1"}, fresh=True)
    assert [r["instruction"] for r in records] == ["C?"]
    lines = (tmp_path / "answers.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["instruction"] for line in lines] == ["C?"]  # no old answer left
    assert json.loads((tmp_path / "answers.settings.json").read_text(encoding="utf-8"))["max_new_tokens"] == 16
    # The same settings resume.
    again = StubLLM()
    again.max_new_tokens = 16
    run_batch(again, ["C?", "D?"], out, progress=False, settings={"model": "m1"})
    assert again.prompts == ["Q: D? A:"]


def test_fresh_leaves_the_old_answers_until_the_first_new_one(tmp_path: Path) -> None:
    from llama_unsloth.batch.runner import run_batch

    out = tmp_path / "answers"
    run_batch(StubLLM(), ["A?"], out, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken() -> StubLLM:
        raise RuntimeError("the model did not load")

    with pytest.raises(RuntimeError):
        run_batch(broken, ["A?"], out, progress=False, fresh=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_an_output_from_an_earlier_version_is_adopted_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from llama_unsloth.batch.runner import run_batch

    out = tmp_path / "answers"
    (tmp_path / "answers.jsonl").write_text('{"instruction": "A?", "answer": "old"}\n', encoding="utf-8")
    llm = StubLLM()
    with caplog.at_level(logging.WARNING, logger="llama_unsloth.batch.settings"):
        records = run_batch(llm, ["A?", "B?"], out, progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.name == "llama_unsloth.batch.settings"]
    assert len(warnings) == 1 and "records no settings (written by an earlier version)" in warnings[0]
    assert [r["answer"] for r in records] == ["old", "answer Q: B? A:"] and llm.prompts == ["Q: B? A:"]
    assert json.loads((tmp_path / "answers.settings.json").read_text(encoding="utf-8"))["max_new_tokens"] == 8


def test_a_hand_edited_settings_record_is_one_line(tmp_path: Path) -> None:
    from llama_unsloth.batch.runner import run_batch
    from llama_unsloth.errors import RagError

    (tmp_path / "answers.jsonl").write_text('{"instruction": "A?", "answer": "old"}\n', encoding="utf-8")
    (tmp_path / "answers.settings.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(RagError, match=r"answers\.settings\.json is not a settings record .* add --fresh"):
        run_batch(StubLLM(), ["A?"], tmp_path / "answers", progress=False)
