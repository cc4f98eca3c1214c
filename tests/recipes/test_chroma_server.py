"""One index server for everyone: the recipes against a real ``chroma run`` server started on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from tests.recipes._helpers import embed_model, exit_code, reuse_embed_model, small_corpus


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[str, int]]:
    """``chroma run`` (the command chromadb ships) on a free local port, until the module's tests end."""
    import chromadb

    command = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    assert command, "the chroma command (installed with chromadb) is missing"
    port = _free_port()
    folder = tmp_path_factory.mktemp("chroma-server")
    log = open(folder / "server.log", "wb")
    server = subprocess.Popen(
        [command, "run", "--path", str(folder / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90
    while True:
        try:
            chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
            break
        except Exception:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"chroma run did not start: {(folder / 'server.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
    yield "127.0.0.1", port
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


def test_index_query_and_checks_against_a_chroma_server(
    chroma_server: Tuple[str, int],
    tmp_path: Path,
    tiny_llama_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    from llama_index.core.embeddings import MockEmbedding

    from llama_unsloth.errors import EmbeddingMismatchError
    from llama_unsloth.rag import chroma_location, open_index
    from recipes.index import main as index
    from recipes.query import main as query

    reuse_embed_model(monkeypatch)
    monkeypatch.chdir(tmp_path)  # where the default --persist-dir (chroma_db) would appear in folder mode
    host, port = chroma_server
    server = ["--chroma-host", host, "--chroma-port", str(port)]
    docs = small_corpus(tmp_path / "docs")
    assert index(["--input-dir", str(docs), *server, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "6 new" in out and f"http://{host}:{port}" in out
    assert not (tmp_path / "chroma_db").exists()
    # A re-run is incremental on the server too.
    assert index(["--input-dir", str(docs), *server, "--no-progress"]) == 0
    assert "0 new, 0 changed, 6 unchanged" in capsys.readouterr().out

    rc = query(
        [
            "--question",
            "Which countries founded Mercosur?",
            *server,
            "--model",
            str(tiny_llama_path),
            "--max-new-tokens",
            "8",
            "--no-load-in-4bit",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "Sources:" in out and "mercosur.txt" in out

    # The environment variables select the server as the flags do.
    monkeypatch.setenv("LLAMA_UNSLOTH_CHROMA_HOST", host)
    monkeypatch.setenv("LLAMA_UNSLOTH_CHROMA_PORT", str(port))
    location = chroma_location("ignored-folder")
    assert location == f"http://{host}:{port}"
    opened = open_index(location, embed_model=embed_model())
    assert len(opened.as_retriever(similarity_top_k=2).retrieve("Mercosur")) == 2
    # The collection's recorded embedding model is checked against the server's copy as against a folder's.
    with pytest.raises(EmbeddingMismatchError):
        open_index(location, embed_model=MockEmbedding(embed_dim=384))


def test_an_unreachable_server_is_one_clear_line(
    tmp_path: Path, tiny_llama_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from recipes.query import main as query

    port = _free_port()
    rc = exit_code(
        query,
        [
            "--question",
            "Which countries founded Mercosur?",
            "--chroma-host",
            "127.0.0.1",
            "--chroma-port",
            str(port),
            "--model",
            str(tiny_llama_path),
            "--no-load-in-4bit",
        ],
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == (
        f"error: Could not reach the Chroma server at http://127.0.0.1:{port}. Start it with "
        f"`chroma run --path chroma_db --host 127.0.0.1 --port {port}`, or check --chroma-host/--chroma-port."
    )


@pytest.mark.timeout(300)
def test_batch_workers_against_servers_survive_sigkill_and_answer_each_question_once(
    chroma_server: Tuple[str, int], tmp_path: Path, tiny_llama_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 workers share the question list against a model server and the Chroma server; SIGKILL, then resume."""
    import csv
    import json
    import os
    import signal

    from recipes.batch import main as batch
    from recipes.index import main as index
    from tests.llama_unsloth.openai_standin import OpenAIStandIn

    reuse_embed_model(monkeypatch)
    host, port = chroma_server
    chroma = ["--chroma-host", host, "--chroma-port", str(port), "--collection", "workers"]
    assert index(["--input-dir", str(small_corpus(tmp_path / "docs")), *chroma, "--no-progress"]) == 0
    standin = OpenAIStandIn(str(tiny_llama_path)).start()
    standin.delay = 0.4
    try:
        questions = [f"Question {n}: which bloc has rule {n}?" for n in range(16)]
        qfile = tmp_path / "questions.txt"
        qfile.write_text("\n".join(questions) + "\n", encoding="utf-8")
        out = tmp_path / "answers"
        args = [
            "--questions",
            str(qfile),
            "--llm-url",
            standin.url,
            "--served-model",
            "tiny",
            "--model",
            str(tiny_llama_path),
            *chroma,
            "--workers",
            "4",
            "--batch-size",
            "1",
            "--out",
            str(out),
            "--no-progress",
            "--max-new-tokens",
            "4",
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        root = Path(__file__).resolve().parents[2]
        child = subprocess.Popen(
            [sys.executable, "-m", "recipes.batch", *args],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        jsonl = tmp_path / "answers.jsonl"
        deadline = time.monotonic() + 180
        while not (jsonl.exists() and len(jsonl.read_text(encoding="utf-8").splitlines()) >= 3):
            assert child.poll() is None, "the batch ended before it could be killed"
            assert time.monotonic() < deadline, "no answers appeared"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        done_before = len(jsonl.read_text(encoding="utf-8").splitlines())
        assert 3 <= done_before < len(questions)
        # The same command again continues where the killed run stopped.
        assert batch(args) == 0
        rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
        assert sorted(r["instruction"] for r in rows) == sorted(questions)  # each question answered exactly once
        with open(tmp_path / "answers.csv", encoding="utf-8-sig", newline="") as handle:
            table = list(csv.DictReader(handle))
        assert [r["instruction"] for r in table] == questions  # the table is in question order
        assert all(r["context"] for r in table)  # retrieved from the Chroma server
        assert standin.max_in_flight > 1  # the workers really asked at the same time
    finally:
        standin.stop()
