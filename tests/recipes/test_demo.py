"""recipes.demo (`make demo`): indexes the sample corpus, answers with POV reranking, batches and compares."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_the_demo_runs_offline_end_to_end_and_a_second_run_embeds_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from recipes.demo import main

    args = ["--out_dir", str(tmp_path), "--max_new_tokens", "8", "--batch_questions", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Sources (query similarity" in out and "pov_score" in out
    assert "| RAG | 2 |" in out and "| no RAG | 2 |" in out
    for name in ("batch_rag.xlsx", "batch_no_rag.xlsx", "compare.md", "compare.xlsx"):
        assert (tmp_path / name).is_file(), name
    first_files = out.split("files: ")[1].split("\n")[0]
    assert main(args) == 0
    # The second run finds every file unchanged in the Chroma folder: nothing is embedded again.
    second = capsys.readouterr().out.split("files: ")[1].split("\n")[0]
    assert "0 new, 0 changed" in second and "chunks: 0 added" in second, (first_files, second)
