"""The query recipe end to end on the tiny Llama: answer, sources, POV scores, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.recipes._helpers import DATA, build_small_index, exit_code, reuse_embed_model


@pytest.fixture(scope="module")
def persist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_index(tmp_path_factory.mktemp("query"))


@pytest.fixture(autouse=True)
def _hygiene(monkeypatch: pytest.MonkeyPatch):
    reuse_embed_model(monkeypatch)


def _query(args, persist: Path, tiny_llama_path: Path, capsys) -> tuple:
    from recipes.query import main

    rc = exit_code(
        main,
        [
            *args,
            "--persist-dir",
            str(persist),
            "--model",
            str(tiny_llama_path),
            "--max-new-tokens",
            "8",
            "--no-load-in-4bit",
        ],
    )
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_query_prints_answer_and_sources(persist: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, out, _ = _query(["--question", "Which countries founded Mercosur?"], persist, tiny_llama_path, capsys)
    assert rc == 0
    assert "Answer: " in out and "Sources:" in out
    sources = out.split("Sources:")[1].strip().splitlines()
    assert 1 <= len(sources) <= 3
    assert "mercosur.txt" in out and "similarity" in out and "pov_score" not in out


def test_query_with_povs_prints_pov_scores(
    persist: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rc, out, _ = _query(
        ["--question", "What limits trade inside a bloc?", "--povs", str(DATA / "povs.txt"), "--stream"],
        persist,
        tiny_llama_path,
        capsys,
    )
    assert rc == 0
    sources = out.split("Sources:")[1].strip().splitlines()
    # 6 files, the two ECOWAS chunks share their start: the duplicate filter leaves at most 5.
    assert 1 <= len(sources) <= 5
    assert all("query_similarity" in s and "pov_score" in s for s in sources)
    assert sum("ecowas_overview" in s for s in sources) <= 1


def test_empty_question_fails_before_loading_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import llama_unsloth.rag
    from llama_unsloth.llms import factory
    from recipes.query import main

    monkeypatch.setattr(
        llama_unsloth.rag, "open_index_with_embeddings", lambda *a, **k: pytest.fail("opened the index")
    )
    monkeypatch.setattr(factory, "load_llm", lambda *a, **k: pytest.fail("loaded the model"))
    assert exit_code(main, ["--question", "   "]) == 2
    assert "question is empty" in capsys.readouterr().err


def test_missing_index_is_a_clear_error(tmp_path: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, err = _query(["--question", "Anything?"], tmp_path / "none", tiny_llama_path, capsys)
    assert rc == 2 and "does not exist" in err and "llama-unsloth index" in err


def test_missing_model_dir_is_a_clear_error(persist: Path, capsys: pytest.CaptureFixture) -> None:
    from recipes.query import main

    assert (
        exit_code(main, ["--question", "Anything?", "--persist-dir", str(persist), "--model-dir", "/does/not/exist"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "/does/not/exist" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- options, context, long questions
@pytest.mark.parametrize(
    "args, message",
    [
        (["--similarity-top-k", "-3"], "--similarity-top-k must be >= 1; got -3."),
        (["--similarity-top-k", "0"], "--similarity-top-k must be >= 1; got 0."),
        (["--max-new-tokens", "-5"], "--max-new-tokens must be >= 1; got -5."),
        (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1; got 0."),
        (
            ["--top-n", "8", "--query-top-n", "4"],
            "--top-n (8) must not exceed --query-top-n (4): POV scoring keeps a subset of the query-ranked chunks.",
        ),
        (["--top-n", "0"], "--top-n must be >= 1; got 0."),
        (
            ["--max-seq-length", "512", "--max-new-tokens", "512"],
            "--max-new-tokens (512) must be below --max-seq-length (512): the prompt needs room too.",
        ),
        (
            ["--prompt-format", "alpacca"],
            "--prompt-format: Unknown prompt format 'alpacca'. Valid formats: alpaca, alpaca-context, chat, instruction-context, reasoning",
        ),
        (["--prompt-format", "my_layout.j2"], "--prompt-format: Prompt template my_layout.j2 does not exist."),
    ],
)
def test_bad_options_stop_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args: list, message: str
) -> None:
    import llama_unsloth.rag
    from llama_unsloth.llms import factory
    from recipes.query import main

    monkeypatch.setattr(
        llama_unsloth.rag, "open_index_with_embeddings", lambda *a, **k: pytest.fail("opened the index")
    )
    monkeypatch.setattr(factory, "load_llm", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(SystemExit) as exit_:
        main(["--question", "Anything?", "--persist-dir", str(tmp_path / "db"), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_show_context_prints_the_cleaned_chunks_the_model_read(
    persist: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture, recorded_prompts: list
) -> None:
    rc, out, _ = _query(
        ["--question", "Which countries founded Mercosur?", "--show-context"], persist, tiny_llama_path, capsys
    )
    assert rc == 0
    context = out.split("Context (")[1]
    assert context.split(" chunks, cleaned, as the model read it):")[0] in ("1", "2", "3")
    assert "--- [1] mercosur.txt ---" in context
    assert "Its four founding members were Argentina, Brazil, Paraguay and Uruguay" in context
    assert "**" not in context and "\n## " not in context  # markdown cleaned, as in the prompt
    first_chunk = context.split("--- [1] mercosur.txt ---\n")[1].split("\n--- [")[0].strip()
    assert first_chunk and first_chunk in recorded_prompts[-1]  # exactly the text the model received


def test_question_longer_than_the_window_is_one_error_line(
    persist: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture
) -> None:
    question = "What about the tariffs and quotas of the trade blocs? " * 200
    rc, out, err = _query(["--question", question], persist, tiny_llama_path, capsys)
    assert rc == 2
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "Loading weights" not in ln]
    assert len(lines) == 1 and "Traceback" not in err
    assert (
        lines[0].startswith("error: The question is too long for the model's window")
        and "Shorten the question by at least" in lines[0]
    )
    assert "Answer:" not in out


def test_offline_hub_model_id_is_one_line_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import llama_unsloth.rag
    from llama_unsloth.llms import factory
    from recipes.query import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setattr(
        llama_unsloth.rag, "open_index_with_embeddings", lambda *a, **k: pytest.fail("opened the index")
    )
    monkeypatch.setattr(factory, "load_llm", lambda *a, **k: pytest.fail("loaded the model"))
    for args in (["--model", "unsloth/Mistral-Nemo-Instruct-2407-bnb-4bit"], []):
        if not args:
            monkeypatch.setenv(
                "LLAMA_UNSLOTH_MODEL", "unsloth/Mistral-Nemo-Instruct-2407-bnb-4bit"
            )  # the default, from the environment
        with pytest.raises(SystemExit) as exit_:
            main(["--question", "Anything?", "--persist-dir", str(tmp_path / "db"), *args])
        assert exit_.value.code == 2
        assert capsys.readouterr().err == (
            "error: Model 'unsloth/Mistral-Nemo-Instruct-2407-bnb-4bit' is not found locally and there is no network "
            "(HF_HUB_OFFLINE=1): pass a local folder (--model path/to/model) or set LLAMA_UNSLOTH_MODEL=path/to/model.\n"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# The users' RAG alpaca layout, verbatim (a Python format string filled as .format(instruction, input, context)).
USERS_RAG_HEAD = (
    "<s>You are an excellent AI assistant. Below is an instruction that describes a task, paired with an input that "
    "provides further information. The instruction and input are question provided by your user. Write a response "
    "appropriately your user's question. \n\n### Instruction:\n"
)
USERS_RAG_TAIL = (
    "\n\nIf text has been provided in context field (text after '### Context:'), you should refer the information to "
    'response. If the answer to the question is not found within the context, you can return "I dont know" as the '
    "response.\n\n### Response:\n"
)


def test_query_with_a_users_python_format_layout_and_prompt_fields(
    persist: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_unsloth import UnslothLLM

    template = Path(__file__).resolve().parents[2] / "examples" / "templates" / "alpaca_rag_inference.txt"
    prompts = []
    real = UnslothLLM._response

    def record(self, prompt, *args):
        prompts.append(prompt)
        return real(self, prompt, *args)

    monkeypatch.setattr(UnslothLLM, "_response", record)
    rc, _, err = _query(
        ["--question", "Which countries founded Mercosur?", "--prompt-format", str(template)],
        persist,
        tiny_llama_path,
        capsys,
    )
    assert rc == 2 and "--prompt-fields" in err and len(err.strip().splitlines()) == 1 and not prompts
    rc, out, _ = _query(
        [
            "--question",
            "Which countries founded Mercosur?",
            "--prompt-format",
            str(template),
            "--prompt-fields",
            "instruction",
            "input",
            "context",
        ],
        persist,
        tiny_llama_path,
        capsys,
    )
    assert rc == 0 and len(prompts) == 1
    assert prompts[0].startswith(
        USERS_RAG_HEAD + "Which countries founded Mercosur?\n\n### Input:\n\n\n### Context:\n"
    )
    assert prompts[0].endswith(USERS_RAG_TAIL)


def test_fast_decode_flags_answer_the_same_through_the_query_recipe(
    persist: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--fast-decode (the static-cache loop; eager on CPU) prints the answer the standard path prints."""
    question = ["--question", "Which countries founded Mercosur?"]
    rc, standard, _ = _query(question, persist, tiny_llama_path, capsys)
    rc_fast, fast, _ = _query(
        [*question, "--fast-decode", "--fast-decode-mode", "eager", "--warm-up"], persist, tiny_llama_path, capsys
    )
    assert rc == rc_fast == 0
    assert fast.split("Sources:")[0] == standard.split("Sources:")[0] and "Answer: " in fast


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--weights", "int4"],
            "--weights applies to the fast decode path only: add --fast-decode (or drop --weights).",
        ),
        (["--fast-decode", "--weights", "int3"], "--weights must be one of bf16, int8, int4; got 'int3'."),
        (
            ["--fast-decode", "--llm-url", "http://127.0.0.1:1/v1"],
            "--fast-decode runs the model in this process; with --llm-url the server decodes: drop one of them.",
        ),
    ],
)
def test_bad_fast_decode_options_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list, message: str
) -> None:
    from recipes.query import main

    assert exit_code(main, ["--question", "q", "--persist-dir", str(tmp_path / "db"), *args]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


# ---------------------------------------------------------------------------------------------- the index's embedding model
def test_a_moved_embedding_model_opens_the_index_and_a_different_one_is_refused(
    persist: Path, minilm_path: Path, tmp_path: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.llama_unsloth.models.test_embeddings import copy_model, retrained_model

    moved = copy_model(minilm_path, tmp_path / "new-venv" / "model")
    rc, out, _ = _query(
        ["--question", "Which countries founded Mercosur?", "--embed-model", str(moved)],
        persist,
        tiny_llama_path,
        capsys,
    )
    assert rc == 0 and "mercosur.txt" in out
    other = retrained_model(minilm_path, tmp_path / "other" / "model")
    rc, _, err = _query(
        ["--question", "Which countries founded Mercosur?", "--embed-model", str(other)],
        persist,
        tiny_llama_path,
        capsys,
    )
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err
    assert (
        f"built with the embedding model '{minilm_path.parent.name}/model' (at {minilm_path.resolve()}, fingerprint "
        in lines[0]
    )
    assert "not 'other/model'" in lines[0] and "Pass --embed-model with the model it was built with" in lines[0]


def test_a_persist_dir_that_is_a_file_is_not_called_missing_or_damaged(
    tmp_path: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture
) -> None:
    notes = tmp_path / "chroma_db"
    notes.write_text("my notes\n", encoding="utf-8")
    rc, _, err = _query(["--question", "Which countries founded Mercosur?"], notes, tiny_llama_path, capsys)
    assert rc == 2 and err == (
        f"error: --persist-dir {notes} is a file, not a folder: point it at the folder `llama-unsloth index` wrote.\n"
    )
    assert notes.read_text(encoding="utf-8") == "my notes\n"


def test_the_readme_snippet_runs_as_written_against_a_demo_index(
    tmp_path: Path, tiny_llm, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The README's first Python block, run as a newcomer would after `make demo` (the tiny Llama for SmolLM2)."""
    import re

    from llama_index.core import Settings

    import llama_unsloth
    from llama_unsloth.rag import build_index
    from tests.recipes._helpers import embed_model

    build_index(
        DATA / "corpus", tmp_path / "demo_output" / "chroma", "demo", embed_model=embed_model(), progress=False
    )
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert 'open_index_with_embeddings("demo_output/chroma", "demo")' in snippet
    code = [ln for ln in snippet.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert 'index, embed_model = open_index_with_embeddings("demo_output/chroma", "demo")' in code
    assert not any("model=model" in ln or "tokenizer=tokenizer" in ln for ln in code)  # names it never defines
    monkeypatch.chdir(tmp_path)  # the paths as written: relative to where `make demo` ran
    monkeypatch.setattr(llama_unsloth, "UnslothLLM", lambda **kwargs: tiny_llm if not kwargs else pytest.fail(kwargs))
    saved = Settings._llm
    try:
        exec(compile(snippet, "README.md", "exec"), {"__name__": "__readme__"})
    finally:
        Settings._llm = saved
    out = capsys.readouterr().out
    assert "pov_score" not in out and re.search(r"\[-?\d", out)  # the POV scores list printed last
