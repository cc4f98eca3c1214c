"""The batch recipe: crash-safe resume, torn JSONL lines, tables, batch-size invariance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.recipes._helpers import build_small_index, exit_code, reuse_embed_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def persist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_index(tmp_path_factory.mktemp("batch"))


@pytest.fixture(autouse=True)
def _hygiene(monkeypatch: pytest.MonkeyPatch):
    reuse_embed_model(monkeypatch)


def _lines(path: Path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_killed_run_resumes_and_answers_each_question_once(
    tmp_path: Path, persist: Path, tiny_llama_path: Path
) -> None:
    import pandas as pd

    topics = ["Mercosur", "USMCA", "ECOWAS", "customs unions", "non-tariff barriers"]
    questions = [f"Question {i}: what about {topics[i % 5]}?" for i in range(60)]
    questions += [questions[3], questions[3]]  # asked three times in all: answered three times
    qfile = tmp_path / "questions.txt"
    qfile.write_text("\n".join(questions) + "\n", encoding="utf-8")
    out = tmp_path / "res" / "answers"
    jsonl = out.with_suffix(".jsonl")
    args = [
        "--questions",
        str(qfile),
        "--out",
        str(out),
        "--persist-dir",
        str(persist),
        "--model",
        str(tiny_llama_path),
        "--no-load-in-4bit",
        "--max-new-tokens",
        "24",
        "--batch-size",
        "1",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "recipes.batch", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if jsonl.is_file() and jsonl.read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.01)
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done_before = jsonl.read_bytes().count(b"\n")
    assert 2 <= done_before < len(questions), "the kill did not land mid-run"
    assert not out.with_suffix(".xlsx").exists()

    # A write torn by a crash: a partial record without its newline.
    with open(jsonl, "ab") as handle:
        handle.write(b'{"position": 61, "instruction": "Question 9: what ab')

    from recipes.batch import main

    assert main(args) == 0
    records = _lines(jsonl)  # every line parses: the torn tail was cut off
    assert len(records) == len(questions)
    assert sorted(r["instruction"] for r in records) == sorted(questions)
    assert sum(r["instruction"] == questions[3] for r in records) == 3
    assert all(r["answer"] is not None and r["context"] and r["sources"] for r in records)
    for table in (pd.read_excel(out.with_suffix(".xlsx")), pd.read_csv(out.with_suffix(".csv"))):
        assert list(table.columns) == ["instruction", "context", "answer", "abstained", "seconds", "sources", "error"]
        assert table["instruction"].tolist() == questions  # input order

    # Nothing left to do: a third run with the same settings answers nothing (and does not load the model).
    from recipes.options import ModelOptions

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ModelOptions, "load", lambda *a, **k: pytest.fail("loaded the model"))
        assert main(args) == 0
    assert len(_lines(jsonl)) == len(questions)


def test_batch_size_does_not_change_greedy_answers(tmp_path: Path, persist: Path, tiny_llama_path: Path) -> None:
    from llama_unsloth import UnslothLLM
    from llama_unsloth.batch import run_batch
    from llama_unsloth.rag import make_postprocessors, open_index

    llm = UnslothLLM(
        model_name=str(tiny_llama_path),
        backend="transformers",
        load_in_4bit=False,
        max_new_tokens=12,
        set_global_tokenizer=False,
    )
    index = open_index(persist)
    questions = [
        "Which countries founded Mercosur?",
        "When did USMCA enter into force?",
        "What is ECOWAS?",
        "Why do non-tariff barriers matter?",
        "Customs union or free trade area?",
    ]
    one = run_batch(
        llm,
        questions,
        tmp_path / "b1",
        index=index,
        postprocessors=make_postprocessors(),
        batch_size=1,
        progress=False,
    )
    four = run_batch(
        llm,
        questions,
        tmp_path / "b4",
        index=index,
        postprocessors=make_postprocessors(),
        batch_size=4,
        progress=False,
    )
    assert [r["answer"] for r in one] == [r["answer"] for r in four]
    assert [r["context"] for r in one] == [r["context"] for r in four]
    plain1 = run_batch(llm, questions, tmp_path / "p1", batch_size=1, progress=False)
    plain4 = run_batch(llm, questions, tmp_path / "p4", batch_size=4, progress=False)
    assert [r["answer"] for r in plain1] == [r["answer"] for r in plain4]
    assert all(r["context"] == "" and r["rag"] is False for r in plain1)


def test_bad_questions_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from recipes.batch import main

    bad = tmp_path / "q.csv"
    bad.write_text("text,id\nhello,1\n", encoding="utf-8")
    assert exit_code(main, ["--questions", str(bad), "--no-rag"]) == 2
    assert "no 'question' or 'instruction' column (columns: text, id)" in capsys.readouterr().err
    assert exit_code(main, ["--questions", str(tmp_path / "missing.txt"), "--no-rag"]) == 2
    assert "not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- users' inputs
def test_over_long_question_is_a_recorded_error_and_the_others_are_answered(
    tmp_path: Path, persist: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import pandas as pd

    from recipes.batch import main

    long_q = "What about the tariffs and quotas of the trade blocs? " * 200
    questions = ["Which countries founded Mercosur?", long_q.strip(), "メルコスールを設立した国は？"]
    qfile = tmp_path / "questions.csv"
    qfile.write_bytes(("question\r\n" + "\r\n".join(questions) + "\r\n").encode("cp932"))  # Japanese Excel's CSV
    out = tmp_path / "res" / "answers"
    for rag in ([], ["--no-rag"]):
        args = [
            "--questions",
            str(qfile),
            "--out",
            str(out) + ("_plain" if rag else ""),
            "--persist-dir",
            str(persist),
            "--model",
            str(tiny_llama_path),
            "--no-load-in-4bit",
            "--max-new-tokens",
            "8",
            "--batch-size",
            "3",
            "--no-progress",
            *rag,
        ]
        if rag:
            args += ["--max-seq-length", "1024"]  # the fine-tune-only prompt of the long question is ~2450 tokens
        assert main(args) == 0
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        assert "2 answers (" in captured.out and "1 not answered (see the error column)" in captured.out
        assert "not answered: What about the tariffs" in captured.err
        base = Path(str(out) + ("_plain" if rag else ""))
        records = _lines(base.with_suffix(".jsonl"))
        assert [r["instruction"] for r in records] == questions
        assert records[1]["answer"] == "" and records[1]["error"].startswith(
            "The question is too long for the model's window"
        )
        assert (
            "error" not in records[0] and "error" not in records[2] and records[0]["answer"] and records[2]["answer"]
        )
        table = pd.read_csv(base.with_suffix(".csv"), encoding="utf-8-sig", keep_default_na=False)
        assert table["instruction"].tolist() == questions
        assert table["error"].tolist()[0] == "" and table["error"].tolist()[1].startswith("The question is too long")
    # A re-run with a window that fits is a run with other settings: refused, then --fresh answers all three.
    args = [
        "--questions",
        str(qfile),
        "--out",
        str(out) + "_plain",
        "--model",
        str(tiny_llama_path),
        "--no-load-in-4bit",
        "--max-new-tokens",
        "8",
        "--no-progress",
        "--no-rag",
        "--max-seq-length",
        "3072",
    ]
    assert exit_code(main, args) == 2
    assert "max_seq_length 1024 -> 3072. Add --fresh" in capsys.readouterr().err
    assert main([*args, "--fresh"]) == 0
    records = _lines(Path(str(out) + "_plain.jsonl"))
    assert [r["instruction"] for r in records] == questions and all("error" not in r for r in records)
    table = pd.read_csv(Path(str(out) + "_plain.csv"), encoding="utf-8-sig", keep_default_na=False)
    assert table["instruction"].tolist() == questions and table["error"].tolist() == ["", "", ""]


def test_a_run_that_fails_before_its_first_answer_leaves_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from recipes.batch import main

    qfile = tmp_path / "q.txt"
    qfile.write_text("One?\nTwo?\n", encoding="utf-8")
    out = tmp_path / "res" / "answers"
    assert (
        exit_code(
            main,
            [
                "--questions",
                str(qfile),
                "--out",
                str(out),
                "--no-rag",
                "--model",
                str(tmp_path / "no-such-model"),
                "--no-progress",
            ],
        )
        == 2
    )
    assert "error: " in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "--batch-size must be >= 1; got 0."),
        (["--similarity-top-k", "0"], "--similarity-top-k must be >= 1; got 0."),
        (["--max-new-tokens", "-5"], "--max-new-tokens must be >= 1; got -5."),
        (["--max-seq-length", "1"], "--max-seq-length must be >= 2; got 1."),
    ],
)
def test_batch_bad_options_stop_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args: list, message: str
) -> None:
    import llama_unsloth.batch
    from recipes.batch import main

    monkeypatch.setattr(llama_unsloth.batch, "load_questions", lambda *a, **k: pytest.fail("read the questions"))
    with pytest.raises(SystemExit) as exit_:
        main(["--questions", str(tmp_path / "q.txt"), "--out", str(tmp_path / "res" / "a"), *args])
    assert exit_.value.code == 2 and capsys.readouterr().err == f"error: {message}\n"
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_in_batch_is_one_line_and_the_rerun_continues(
    tmp_path: Path, tiny_llama_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from llama_unsloth.batch import runner  # run_batch looks append_jsonl up there
    from recipes.batch import main

    questions = [f"Question {i}?" for i in range(5)]
    qfile = tmp_path / "q.txt"
    qfile.write_text("\n".join(questions), encoding="utf-8")
    out = tmp_path / "res" / "answers"
    args = [
        "--questions",
        str(qfile),
        "--out",
        str(out),
        "--no-rag",
        "--model",
        str(tiny_llama_path),
        "--no-load-in-4bit",
        "--max-new-tokens",
        "4",
        "--batch-size",
        "1",
        "--no-progress",
    ]
    real = runner.append_jsonl
    written: list = []

    def then_ctrl_c(handle, record):  # Ctrl-C arrives right after the second answer is on disk
        real(handle, record)
        written.append(record)
        if len(written) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(runner, "append_jsonl", then_ctrl_c)
    assert main(args) == 130
    err = capsys.readouterr().err
    assert (
        f"interrupted: 2 of 5 answers are saved in {out}.jsonl; run the same command again to answer the rest." in err
    )
    assert "Traceback" not in err and not out.with_suffix(".xlsx").exists()
    monkeypatch.setattr(runner, "append_jsonl", real)
    assert main(args) == 0
    assert [r["instruction"] for r in _lines(out.with_suffix(".jsonl"))] == questions


def test_fast_decode_batch_warms_up_its_batch_size_and_answers_as_the_standard_path(
    tmp_path: Path, tiny_llama_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``batch --fast-decode --warm-up --batch-size 3`` builds the batch-4 slots before answering; same answers."""
    from llama_unsloth import UnslothLLM
    from recipes.batch import main

    qfile = tmp_path / "q.txt"
    qfile.write_text("Which countries founded Mercosur?\nWhat is ECOWAS?\nWhen did USMCA start?\n", encoding="utf-8")
    common = ["--questions", str(qfile), "--no-rag", "--model", str(tiny_llama_path), "--no-load-in-4bit"]
    common += ["--max-new-tokens", "8", "--batch-size", "3", "--no-progress", "--max-seq-length", "512"]
    warmed = []
    real_warm_up = UnslothLLM.warm_up

    def recording_warm_up(self, prompt_tokens=None, batch_sizes=(1,)):  # noqa: ANN001, ANN202
        stats = real_warm_up(self, prompt_tokens, batch_sizes)
        warmed.append((tuple(batch_sizes), list(stats["slots"])))
        return stats

    monkeypatch.setattr(UnslothLLM, "warm_up", recording_warm_up)
    assert main([*common, "--out", str(tmp_path / "standard")]) == 0
    fast = ["--fast-decode", "--fast-decode-mode", "eager", "--warm-up"]
    assert main([*common, *fast, "--out", str(tmp_path / "fast")]) == 0
    assert warmed == [((3,), [(4, 256), (4, 512)])]  # batch 3 runs in the batch-4 slots, every length bucket
    standard = [r["answer"] for r in _lines(tmp_path / "standard.jsonl")]
    answers = [r["answer"] for r in _lines(tmp_path / "fast.jsonl")]
    assert answers == standard and len(answers) == 3


# ---------------------------------------------------------------------------------------------- resume keyed by settings
QUESTIONS = ["Which countries founded Mercosur?", "What is ECOWAS?"]


def _base_args(qfile: Path, out: Path, persist: Path, model: Path) -> list:
    return [
        "--questions",
        str(qfile),
        "--out",
        str(out),
        "--persist-dir",
        str(persist),
        "--model",
        str(model),
        "--no-load-in-4bit",
        "--max-new-tokens",
        "2",
        "--batch-size",
        "2",
        "--no-progress",
    ]


@pytest.fixture(scope="module")
def answered(tmp_path_factory: pytest.TempPathFactory, persist: Path, tiny_llama_path: Path) -> Path:
    """A finished RAG run of two questions: the folder holding q.txt and answers.{jsonl,settings.json,xlsx,csv}."""
    from recipes.batch import main

    folder = tmp_path_factory.mktemp("answered")
    (folder / "q.txt").write_text("\n".join(QUESTIONS) + "\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        reuse_embed_model(patch)
        assert main(_base_args(folder / "q.txt", folder / "answers", persist, tiny_llama_path)) == 0
    return folder


def _copy_of(answered: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(answered, tmp_path / "run"))


def _other_model(tmp_path: Path, tiny_llama_path: Path) -> str:
    import shutil

    other = Path(shutil.copytree(tiny_llama_path, tmp_path / "other-model"))
    config = json.loads((other / "config.json").read_text(encoding="utf-8"))
    (other / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}), encoding="utf-8")
    return str(other)


@pytest.mark.parametrize(
    "change, expected",
    [
        (["--no-rag"], "rag on -> off"),
        (["--max-new-tokens", "3"], "max_new_tokens 2 -> 3"),
        (["--max-seq-length", "1024"], "max_seq_length 2048 -> 1024"),
        (["--similarity-top-k", "5"], "similarity_top_k 3 -> 5"),
        (["--povs", "POVS"], 'povs none -> ["Free trade helps members."]'),
        (["--prompt-format", "alpaca"], "layout chat -> alpaca"),
        (["--model", "OTHER"], "model "),
        (["--max-new-tokens", "3", "--no-rag"], "max_new_tokens 2 -> 3; rag on -> off"),
    ],
)
def test_a_resume_with_other_settings_is_refused_before_anything_loads(
    tmp_path: Path,
    answered: Path,
    persist: Path,
    tiny_llama_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    change: list,
    expected: str,
) -> None:
    from recipes.batch import main
    from recipes.options import IndexOptions, ModelOptions

    run = _copy_of(answered, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    (tmp_path / "povs.txt").write_text("Free trade helps members.\n", encoding="utf-8")
    other = _other_model(tmp_path, tiny_llama_path) if "OTHER" in change else ""
    change = [{"POVS": str(tmp_path / "povs.txt"), "OTHER": other}.get(c, c) for c in change]
    monkeypatch.setattr(ModelOptions, "load", lambda *a, **k: pytest.fail("loaded the model"))
    monkeypatch.setattr(IndexOptions, "open", lambda *a, **k: pytest.fail("opened the index"))
    args = _base_args(run / "q.txt", run / "answers", persist, tiny_llama_path)
    assert exit_code(main, [*args, *change]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"error: {run / 'answers.jsonl'} holds answers made with other settings"
    )
    assert expected in err and "Add --fresh to replace them" in err, err
    if other:
        assert f"model {tiny_llama_path.resolve()} -> {Path(other).resolve()}" in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched


def test_the_same_model_moved_elsewhere_resumes(
    tmp_path: Path, answered: Path, persist: Path, tiny_llama_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from recipes.batch import main
    from recipes.options import ModelOptions

    run = _copy_of(answered, tmp_path)
    moved = shutil.copytree(tiny_llama_path, tmp_path / "moved")
    monkeypatch.setattr(ModelOptions, "load", lambda *a, **k: pytest.fail("loaded the model"))
    assert main(_base_args(run / "q.txt", run / "answers", persist, Path(moved))) == 0  # all answered: nothing loads
    recorded = json.loads((run / "answers.settings.json").read_text(encoding="utf-8"))
    assert recorded["rag"] is True and recorded["embed_model"] and recorded["similarity_top_k"] == 3
    assert recorded["layout"]["name"] == "chat" and recorded["postprocessors"][0]["class"] == "DuplicateChunkFilter"


def test_fresh_replaces_the_old_answers(
    tmp_path: Path, answered: Path, persist: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from recipes.batch import main

    run = _copy_of(answered, tmp_path)
    (run / "q.txt").write_text(QUESTIONS[0] + "\n", encoding="utf-8")  # one question now: no old answer may remain
    args = [*_base_args(run / "q.txt", run / "answers", persist, tiny_llama_path), "--max-new-tokens", "3"]
    assert main([*args, "--fresh"]) == 0
    assert "1 answers (" in capsys.readouterr().out
    assert [r["instruction"] for r in _lines(run / "answers.jsonl")] == QUESTIONS[:1]
    assert json.loads((run / "answers.settings.json").read_text(encoding="utf-8"))["max_new_tokens"] == 3
    assert main(args) == 0  # and its settings resume


def test_an_answers_file_from_an_earlier_version_is_adopted_with_one_warning(
    tmp_path: Path, tiny_llama_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from recipes.batch import main

    qfile = tmp_path / "q.txt"
    qfile.write_text("One?\nTwo?\n", encoding="utf-8")
    (tmp_path / "answers.jsonl").write_text(
        '{"instruction": "One?", "answer": "old", "rag": false}\n', encoding="utf-8"
    )
    args = ["--questions", str(qfile), "--out", str(tmp_path / "answers"), "--no-rag", "--model", str(tiny_llama_path)]
    assert main([*args, "--no-load-in-4bit", "--max-new-tokens", "2", "--no-progress"]) == 0
    assert caplog.text.count("records no settings (written by an earlier version)") == 1  # one line on stderr
    assert [r["answer"] for r in _lines(tmp_path / "answers.jsonl")][0] == "old"
    assert json.loads((tmp_path / "answers.settings.json").read_text(encoding="utf-8"))["rag"] is False


# ---------------------------------------------------------------------------------------------- one bad question
def test_a_question_the_embedder_cannot_encode_gets_an_error_row_and_the_others_are_answered(
    tmp_path: Path,
    persist: Path,
    tiny_llama_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from recipes.batch import main

    bad = "What does the untokenisable question ask?"
    real = HuggingFaceEmbedding._get_query_embedding

    def fails_for_one(self, query: str):  # noqa: ANN001, ANN202 - the real MiniLM, except for one text
        if query == bad:
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
        return real(self, query)

    monkeypatch.setattr(HuggingFaceEmbedding, "_get_query_embedding", fails_for_one)
    qfile = tmp_path / "q.txt"
    qfile.write_text(f"{QUESTIONS[0]}\n{bad}\n{QUESTIONS[1]}\n", encoding="utf-8")
    args = _base_args(qfile, tmp_path / "answers", persist, tiny_llama_path)
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "2 answers (" in captured.out and "1 not answered" in captured.out
    records = _lines(tmp_path / "answers.jsonl")
    assert [r["instruction"] for r in records] == [QUESTIONS[0], bad, QUESTIONS[1]]
    assert records[1]["error"].startswith("could not retrieve context for this question (TypeError: TextEncodeInput")
    assert records[0]["context"] and records[2]["context"] and "error" not in records[0]
    # Once the embedder takes it, the same command answers that question, and only it.
    monkeypatch.setattr(HuggingFaceEmbedding, "_get_query_embedding", real)
    assert main(args) == 0
    records = _lines(tmp_path / "answers.jsonl")
    assert len(records) == 4 and records[-1]["instruction"] == bad and "error" not in records[-1]


# ---------------------------------------------------------------------------------------------- unwritable --out
def test_an_out_that_cannot_be_written_is_refused_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import llama_unsloth.batch
    from recipes.batch import main

    monkeypatch.setattr(llama_unsloth.batch, "load_questions", lambda *a, **k: pytest.fail("read the questions"))
    (tmp_path / "q.txt").write_text("One?\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("a regular file\n", encoding="utf-8")
    under_file = tmp_path / "notes.txt" / "answers"
    assert exit_code(main, ["--questions", str(tmp_path / "q.txt"), "--out", str(under_file), "--no-rag"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "which is a file, not a folder: choose another path." in err
    read_only = Path("/sys/llama-unsloth-test/answers")  # sysfs refuses new files, even to root
    try:
        handle, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        pass
    else:
        os.close(handle)
        os.unlink(probe)
        pytest.skip("/sys takes new files here: no read-only location to try")
    assert exit_code(main, ["--questions", str(tmp_path / "q.txt"), "--out", str(read_only), "--no-rag"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be written: /sys is read-only" in err
