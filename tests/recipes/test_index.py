"""The index recipe: incremental re-runs, embedding checks, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.recipes._helpers import build_small_index, embed_model, exit_code, reuse_embed_model, small_corpus


@pytest.fixture(autouse=True)
def _bundled_embed_model(monkeypatch: pytest.MonkeyPatch) -> None:
    reuse_embed_model(monkeypatch)  # the recipe would load MiniLM on every call


def _run(args, capsys) -> tuple:
    from recipes.index import main

    rc = exit_code(main, [*args, "--no-progress"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_index_twice_then_change_then_delete(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from llama_unsloth.rag import open_collection

    docs = small_corpus(tmp_path / "docs")
    args = ["--input-dir", str(docs), "--persist-dir", str(tmp_path / "db"), "--collection", "col1"]
    rc, out, _ = _run(args, capsys)
    assert rc == 0 and "6 new" in out
    count = open_collection(tmp_path / "db", "col1").count()
    assert count >= 6

    rc, out, _ = _run(args, capsys)
    assert rc == 0 and "6 unchanged" in out and "0 added" in out
    assert open_collection(tmp_path / "db", "col1").count() == count

    (docs / "mercosur.txt").write_text(
        "Zebra marker text. Mercosur now has a brand new founding story.\n", encoding="utf-8"
    )
    rc, out, _ = _run(args, capsys)
    assert rc == 0 and "1 changed" in out and "5 unchanged" in out
    chroma = open_collection(tmp_path / "db", "col1")
    got = chroma.get(where={"file_name": "mercosur.txt"}, include=["documents", "metadatas"])
    assert len(got["ids"]) == 1 and "Zebra marker" in got["documents"][0]
    assert all("Asunción" not in d for d in got["documents"])

    (docs / "usmca.txt").unlink()
    rc, out, _ = _run(args, capsys)
    assert rc == 0 and "1 removed" in out
    assert open_collection(tmp_path / "db", "col1").get(where={"file_name": "usmca.txt"})["ids"] == []


def test_bookkeeping_metadata_stays_out_of_llm_and_embed_text(tmp_path: Path) -> None:
    from llama_index.core.schema import MetadataMode

    from llama_unsloth.rag import open_index, retrieve

    persist = build_small_index(tmp_path)
    nodes = retrieve(
        open_index(persist, "documents", embed_model=embed_model()), "Mercosur founders", similarity_top_k=2
    )
    for n in nodes:
        for mode in (MetadataMode.LLM, MetadataMode.EMBED):
            text = n.node.get_content(metadata_mode=mode)
            assert "content_hash" not in text and "file_path" not in text and text == n.node.get_content()


def test_reopen_with_other_embedding_dimension_is_a_clear_error(tmp_path: Path) -> None:
    from llama_index.core import MockEmbedding

    from llama_unsloth.errors import EmbeddingMismatchError
    from llama_unsloth.rag import build_index, open_index

    persist = build_small_index(tmp_path)
    with pytest.raises(EmbeddingMismatchError, match=r"384-dimensional.*gives 8"):
        open_index(persist, "documents", embed_model=MockEmbedding(embed_dim=8))
    with pytest.raises(EmbeddingMismatchError, match="new --collection"):
        build_index(tmp_path / "docs", persist, "documents", embed_model=MockEmbedding(embed_dim=8), progress=False)


def test_missing_folder_and_missing_index_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from llama_unsloth.errors import IndexNotFoundError
    from llama_unsloth.rag import open_index

    rc, _, err = _run(["--input-dir", str(tmp_path / "nope"), "--persist-dir", str(tmp_path / "db")], capsys)
    assert rc == 2 and "does not exist" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    rc, _, err = _run(["--input-dir", str(tmp_path / "empty"), "--persist-dir", str(tmp_path / "db")], capsys)
    assert rc == 2 and "holds no .txt/.md files" in err

    with pytest.raises(IndexNotFoundError, match="does not exist"):
        open_index(tmp_path / "no_db")
    (tmp_path / "not_chroma").mkdir()
    with pytest.raises(IndexNotFoundError, match="not a Chroma index"):
        open_index(tmp_path / "not_chroma")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "chroma.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(IndexNotFoundError, match="damaged"):
        open_index(broken)
    rc, _, err = _run(
        ["--input-dir", str(small_corpus(tmp_path / "d")), "--persist-dir", str(tmp_path / "db"), "--collection", "x"],
        capsys,
    )
    assert rc == 2 and "Invalid collection name 'x'" in err
    persist = build_small_index(tmp_path / "ok")
    with pytest.raises(IndexNotFoundError, match=r"no collection 'other' \(collections: documents\)"):
        open_index(persist, "other")


# ---------------------------------------------------------------------------------------------- users' corpora
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--chunk-size", "0"], "--chunk-size must be >= 16; got 0."),
        (["--chunk-size", "-5"], "--chunk-size must be >= 16; got -5."),
        (["--chunk-overlap", "-1"], "--chunk-overlap must be >= 0; got -1."),
        (["--chunk-overlap", "2000"], "--chunk-overlap must be below --chunk-size (2000); got 2000."),
        (
            ["--chunk-unit", "tokens", "--chunk-overlap", "400"],
            "--chunk-overlap must be below --chunk-size (384); got 400.",
        ),
        (["--chunk-unit", "words"], "--chunk-unit must be one of characters, tokens; got 'words'."),
        (["--embed-backend", "openai"], "--embed-backend must be one of huggingface, cohere; got 'openai'."),
        (["--embed-batch-size", "0"], "--embed-batch-size must be >= 1; got 0."),
    ],
)
def test_bad_options_stop_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args: list, message: str
) -> None:
    import llama_unsloth.rag
    from recipes.index import main

    monkeypatch.setattr(
        llama_unsloth.rag, "make_embed_model", lambda *a, **k: pytest.fail("loaded the embedding model")
    )
    docs = small_corpus(tmp_path / "docs")
    with pytest.raises(SystemExit) as exit_:
        main(["--input-dir", str(docs), "--persist-dir", str(tmp_path / "db"), *args, "--no-progress"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"
    assert not (tmp_path / "db").exists()


def test_bad_option_in_a_config_file_is_checked_too(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from recipes.index import main

    config = tmp_path / "index.yaml"
    config.write_text("chunk_size: 8\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(config), "--input-dir", str(tmp_path), "--persist-dir", str(tmp_path / "db")])
    assert exit_.value.code == 2 and capsys.readouterr().err == "error: --chunk-size must be >= 16; got 8.\n"


def test_offline_hub_embedding_model_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: the model is nowhere locally
    docs = small_corpus(tmp_path / "docs")
    rc, _, err = _run(
        ["--input-dir", str(docs), "--persist-dir", str(tmp_path / "db"), "--embed-model", "BAAI/bge-base-en"], capsys
    )
    assert rc == 2
    lines = [
        ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "Loading weights" not in ln
    ]  # the session's MiniLM loading
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    assert (
        "'BAAI/bge-base-en' is not found locally and there is no network" in err and "LLAMA_UNSLOTH_EMBED_MODEL" in err
    )
    assert not (tmp_path / "db").exists()


def test_index_prints_skipped_files_encodings_and_the_long_chunk_note(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.llama_unsloth.rag.test_documents import write_mixed_corpus

    docs = write_mixed_corpus(tmp_path / "docs")
    rc, out, err = _run(["--input-dir", str(docs), "--persist-dir", str(tmp_path / "db")], capsys)
    assert rc == 0
    assert "6 new, 0 changed, 0 unchanged, 0 removed, 3 skipped" in out
    assert "skipped: empty.txt (empty), photo.txt (binary), sub/noise.md (binary)" in out
    assert "encodings: 2 file(s) cp932, 1 file(s) euc_jis_2004, 1 file(s) utf-16, 1 file(s) utf-8-sig" in out
    assert "chunks: 2000 characters, overlap 120" in out
    assert f"warning: skipped {docs / 'photo.txt'}: binary data, not text." in err
    assert err.count("note: ") == 1 and "reads 256 tokens" in err  # the English USMCA chunk is longer
    rc, out, err = _run(["--input-dir", str(docs), "--persist-dir", str(tmp_path / "db")], capsys)
    assert rc == 0 and "0 new, 0 changed, 6 unchanged" in out and "note: " not in err


def test_sigint_during_index_keeps_committed_files_and_the_rerun_embeds_only_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from llama_unsloth.rag import open_collection

    docs = tmp_path / "docs"
    docs.mkdir()
    english = (Path(__file__).resolve().parents[2] / "llama_unsloth" / "data" / "corpus" / "mercosur.txt").read_text(
        encoding="utf-8"
    )
    for i in range(40):
        (docs / f"doc{i:02d}.txt").write_text(f"Document {i:02d}.\n\n{english[: 600 + 10 * i]}", encoding="utf-8")
    args = ["--input-dir", str(docs), "--persist-dir", str(tmp_path / "db"), "--embed-batch-size", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "recipes.index", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    seen = bytearray()
    progressed = threading.Event()

    def read_stderr() -> None:  # tqdm's bar counts committed files: "Indexing files: ... 3/40"
        while True:
            block = proc.stderr.read1(4096)
            if not block:
                return
            seen.extend(block)
            found = [int(n) for n in __import__("re").findall(rb"Indexing files:[^\r\n]*?(\d+)/40", bytes(seen))]
            if found and max(found) >= 3:
                progressed.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert progressed.wait(180), seen.decode(errors="replace")[-2000:]
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    err = seen.decode(errors="replace")
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("interrupted (SIGINT): kept ") and "run the same command again" in last
    kept = int(last.split("kept ")[1].split(" ")[0])
    assert 3 <= kept < 40
    assert open_collection(tmp_path / "db", "documents").count() == kept  # one chunk per file, all committed

    # The rerun embeds only the files not committed yet.
    from tests.recipes._helpers import embed_model as session_model

    model = session_model()
    embedded: list = []
    real = type(model).get_text_embedding_batch
    monkeypatch.setattr(
        type(model),
        "get_text_embedding_batch",
        lambda self, texts, **kw: embedded.extend(texts) or real(self, texts, **kw),
    )
    rc, out, _ = _run(args, capsys)
    assert rc == 0 and f"{40 - kept} new, 0 changed, {kept} unchanged" in out
    assert len(embedded) == 40 - kept
    assert open_collection(tmp_path / "db", "documents").count() == 40


def test_config_files_in_cp932_and_broken_ones_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from recipes.config import parse
    from recipes.index import make_parser

    good = tmp_path / "index.yaml"
    good.write_bytes(
        "collection: docs-ja\ninput_dir: 資料\nchunk_size: 500\n".encode("cp932")
    )  # saved by a Japanese Windows editor
    indexing, target = parse(make_parser(), ["--config", str(good)])
    assert (indexing.input_dir, target.collection, indexing.chunk_size) == ("資料", "docs-ja", 500)
    for name, text, message in (
        ("broken.yaml", "chunk_size: [1, 2\n", "not valid YAML"),
        ("broken.json", '{"chunk_size": 5', "not valid JSON"),
        ("list.yaml", "- 1\n- 2\n", "expected a mapping of option names to values"),
        ("typo.yaml", "chunk_sise: 500\n", "unknown option(s) chunk_sise; valid: "),
    ):
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(SystemExit) as exit_:
            parse(make_parser(), ["--config", str(tmp_path / name), "--input-dir", "x"])
        err = capsys.readouterr().err
        assert (
            exit_.value.code == 2
            and err.startswith(f"error: --config {tmp_path / name}: ")
            and message in err
            and err.count("\n") == 1
        ), err


# ---------------------------------------------------------------------------------------------- settings, locations
def test_a_rerun_with_other_settings_is_refused_and_fresh_rebuilds(
    tmp_path: Path, minilm_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from llama_unsloth.rag import open_collection
    from tests.llama_unsloth.models.test_embeddings import copy_model, retrained_model

    docs = small_corpus(tmp_path / "docs")
    args = ["--input-dir", str(docs), "--persist-dir", str(tmp_path / "db")]
    assert _run(args, capsys)[0] == 0
    rc, _, err = _run([*args, "--chunk-size", "500"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "--fresh to rebuild it" in err
    other = retrained_model(minilm_path, tmp_path / "other" / "model")
    rc, _, err = _run([*args, "--embed-model", str(other)], capsys)
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert rc == 2 and len(lines) == 1 and f"built with the embedding model '{minilm_path.parent.name}/model'" in err
    assert "--fresh" in lines[0]
    # The same model from another folder adds to it.
    rc, out, _ = _run([*args, "--embed-model", str(copy_model(minilm_path, tmp_path / "moved"))], capsys)
    assert rc == 0 and "6 unchanged" in out and "(embeddings: moved;" in out
    rc, out, _ = _run([*args, "--chunk-size", "500", "--chunk-overlap", "50", "--fresh"], capsys)
    assert rc == 0 and "6 new, 0 changed, 0 unchanged" in out and "chunks: 500 characters, overlap 50" in out
    assert open_collection(tmp_path / "db", "documents").metadata["llama_unsloth_chunk_size"] == 500
    rc, out, _ = _run([*args, "--embed-model", str(other), "--fresh"], capsys)
    assert rc == 0 and "6 new" in out and "(embeddings: other/model;" in out


def test_a_persist_dir_that_is_a_file_or_read_only_stops_before_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import llama_unsloth.rag
    from tests.llama_unsloth.rag.test_store import read_only_view

    docs = small_corpus(tmp_path / "docs")
    notes = tmp_path / "chroma_db"
    notes.write_text("my notes\n", encoding="utf-8")
    monkeypatch.setattr(llama_unsloth.rag, "make_embed_model", lambda *a, **k: pytest.fail("loaded the model"))
    rc, _, err = _run(["--input-dir", str(docs), "--persist-dir", str(notes)], capsys)
    assert (rc, err) == (2, f"error: --persist-dir {notes} is a file, not a folder: choose a folder path.\n")
    assert notes.read_text(encoding="utf-8") == "my notes\n"
    rc, _, err = _run(["--input-dir", str(docs), "--persist-dir", str(notes / "db")], capsys)
    assert rc == 2 and "lies inside" in err and "which is a file" in err
    (tmp_path / "disk" / "db").mkdir(parents=True)
    with read_only_view(tmp_path / "disk") as view:
        rc, _, err = _run(["--input-dir", str(docs), "--persist-dir", str(view / "db")], capsys)
    assert rc == 2 and "is read-only" in err and "damaged" not in err and err.count("\n") == 1
