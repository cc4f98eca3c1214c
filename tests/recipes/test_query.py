"""The query recipe end to end on the tiny Llama: answer, sources, POV scores, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.recipes._helpers import DATA, build_small_index, reuse_embed_model


@pytest.fixture(scope="module")
def persist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_index(tmp_path_factory.mktemp("query"))


@pytest.fixture(autouse=True)
def _hygiene(monkeypatch: pytest.MonkeyPatch):
    reuse_embed_model(monkeypatch)


def _query(args, persist: Path, tiny_llama_path: Path, capsys) -> tuple:
    from recipes.query import main

    rc = main([*args, "--persist-dir", str(persist), "--model", str(tiny_llama_path), "--max-new-tokens", "8", "--no-load-in-4bit"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_query_prints_answer_and_sources(persist: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, out, _ = _query(["--question", "Which countries founded Mercosur?"], persist, tiny_llama_path, capsys)
    assert rc == 0
    assert "Answer: " in out and "Sources:" in out
    sources = out.split("Sources:")[1].strip().splitlines()
    assert 1 <= len(sources) <= 3
    assert "mercosur.txt" in out and "similarity" in out and "pov_score" not in out


def test_query_with_povs_prints_pov_scores(persist: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, out, _ = _query(
        ["--question", "What limits trade inside a bloc?", "--povs", str(DATA / "povs.txt"), "--stream"], persist, tiny_llama_path, capsys
    )
    assert rc == 0
    sources = out.split("Sources:")[1].strip().splitlines()
    # 6 files, the two ECOWAS chunks share their start: the duplicate filter leaves at most 5.
    assert 1 <= len(sources) <= 5
    assert all("query_similarity" in s and "pov_score" in s for s in sources)
    assert sum("ecowas_overview" in s for s in sources) <= 1


def test_empty_question_fails_before_loading_anything(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from llama_unsloth import index_store, rag
    from recipes.query import main

    monkeypatch.setattr(index_store, "open_index", lambda *a, **k: pytest.fail("opened the index"))
    monkeypatch.setattr(rag, "load_llm", lambda *a, **k: pytest.fail("loaded the model"))
    assert main(["--question", "   "]) == 2
    assert "question is empty" in capsys.readouterr().err


def test_missing_index_is_a_clear_error(tmp_path: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, err = _query(["--question", "Anything?"], tmp_path / "none", tiny_llama_path, capsys)
    assert rc == 2 and "does not exist" in err and "llama-unsloth index" in err


def test_missing_model_dir_is_a_clear_error(persist: Path, capsys: pytest.CaptureFixture) -> None:
    from recipes.query import main

    assert main(["--question", "Anything?", "--persist-dir", str(persist), "--model-dir", "/does/not/exist"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "/does/not/exist" in err and "Traceback" not in err
