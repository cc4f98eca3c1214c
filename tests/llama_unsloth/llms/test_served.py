"""ServedLLM against a local OpenAI-compatible server (the real openai client): the same prompts as UnslothLLM."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from llama_unsloth import UnslothLLM
from llama_unsloth.llms.served import ServedLLM, ServedModelError
from tests.llama_unsloth.openai_standin import OpenAIStandIn

pytestmark = pytest.mark.slow

J2 = Path(__file__).resolve().parents[3] / "examples" / "templates" / "QA_finetune_Instruction_Context_new.j2"
LAYOUTS = ["alpaca", "alpaca-context", "instruction-context", "reasoning", "chat", str(J2)]
DOCS = [
    "Mercosur was created by the Treaty of Asuncion in 1991 by Argentina, Brazil, Paraguay and Uruguay.",
    "ECOWAS is the Economic Community of West African States, founded by the Treaty of Lagos in 1975.",
]


@pytest.fixture(scope="module")
def standin(tiny_llama_path: Path) -> Iterator[OpenAIStandIn]:
    server = OpenAIStandIn(str(tiny_llama_path)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def index(minilm_path: Path) -> Any:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    return VectorStoreIndex.from_documents(
        [Document(text=t) for t in DOCS], embed_model=HuggingFaceEmbedding(model_name=str(minilm_path))
    )


def _pair(tiny_llama_path: Path, standin: OpenAIStandIn, layout: str) -> tuple:
    local = UnslothLLM(
        model_name=str(tiny_llama_path),
        backend="transformers",
        load_in_4bit=False,
        max_new_tokens=8,
        prompt_format=layout,
    )
    served = ServedLLM(
        tokenizer=local.tokenizer,
        api_base=standin.url,
        served_model="tiny",
        prompt_format=layout,
        max_new_tokens=8,
        max_retries=0,
    )
    return local, served


@pytest.mark.parametrize(
    "layout", LAYOUTS, ids=["alpaca", "alpaca-context", "instruction-context", "reasoning", "chat", "users-j2"]
)
def test_served_prompts_stops_and_answers_equal_unsloth_llm(
    tiny_llama_path: Path, standin: OpenAIStandIn, index: Any, layout: str, generated: List[str]
) -> None:
    from llama_index.core import Settings

    local, served = _pair(tiny_llama_path, standin, layout)
    question = "Which treaty created Mercosur?"
    saved = Settings._llm
    try:
        Settings.llm = local
        local_answer = local.complete(local.format_prompt(question, DOCS[0]), formatted=True)
        local_engine = str(index.as_query_engine(similarity_top_k=2).query(question))
        local_chat = str(index.as_chat_engine(chat_mode="context", similarity_top_k=2).chat(question))
        Settings.llm = served
        standin.prompts.clear()
        served_answer = served.complete(served.format_prompt(question, DOCS[0]), formatted=True)
        served_engine = str(index.as_query_engine(similarity_top_k=2).query(question))
        served_chat = str(index.as_chat_engine(chat_mode="context", similarity_top_k=2).chat(question))
    finally:
        Settings._llm = saved
    # Byte for byte the prompts UnslothLLM hands generate, for a direct call, a query engine and a chat engine.
    assert len(standin.prompts) == 3 and len(generated) == 6  # 3 in-process, then 3 by the server's own engine
    assert standin.prompts == generated[:3]
    assert standin.prompts[0] == local.format_prompt(question, DOCS[0])
    assert standin.stops[-1] == local._stop_strings()
    # Greedy answers, cleaned the same way.
    assert served_answer.text == local_answer.text
    assert (served_engine, served_chat) == (local_engine, local_chat)
    assert served_answer.raw["usage"]["prompt_tokens"] == len(local._encode(standin.prompts[0]))


def test_engine_prompts_are_identical(
    tiny_llama_path: Path, standin: OpenAIStandIn, index: Any, generated: List[str]
) -> None:
    from llama_index.core import Settings

    local, served = _pair(tiny_llama_path, standin, str(J2))
    saved = Settings._llm
    try:
        for llm in (local, served):
            Settings.llm = llm
            index.as_query_engine(similarity_top_k=2).query("Which treaty created ECOWAS?")
            index.as_chat_engine(chat_mode="condense_plus_context", similarity_top_k=2).chat(
                "Which treaty created ECOWAS?"
            )
    finally:
        Settings._llm = saved
    # The in-process model runs first; the server's own engine decodes the same prompts after it.
    local_prompts = [p for p in generated if p.startswith("You are a brilliant Iranian")][:2]
    assert len(local_prompts) == 2
    assert standin.prompts[-2:] == local_prompts


def test_streaming_gives_the_same_answer(tiny_llama_path: Path, standin: OpenAIStandIn) -> None:
    local, served = _pair(tiny_llama_path, standin, "alpaca-context")
    prompt = local.format_prompt("Which treaty created Mercosur?", DOCS[0])
    chunks = list(served.stream_complete(prompt, formatted=True))
    assert (
        chunks[-1].text == served.complete(prompt, formatted=True).text == local.complete(prompt, formatted=True).text
    )
    assert "".join(c.delta or "" for c in chunks) == chunks[-1].text


def test_a_503_is_retried(tiny_llama_path: Path, standin: OpenAIStandIn) -> None:
    local = UnslothLLM(model_name=str(tiny_llama_path), backend="transformers", load_in_4bit=False, max_new_tokens=4)
    served = ServedLLM(
        tokenizer=local.tokenizer, api_base=standin.url, served_model="tiny", max_new_tokens=4, max_retries=2
    )
    before = standin.requests
    standin.fail_next = 1
    assert served.complete("What is a customs union?").text == local.complete("What is a customs union?").text
    assert standin.requests - before == 2


def test_unreachable_server_and_wrong_model_name_are_one_clear_line(
    tiny_llama_path: Path, standin: OpenAIStandIn
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = ServedLLM(tokenizer=tokenizer, api_base=f"http://127.0.0.1:{port}/v1", served_model="tiny", max_retries=0)
    with pytest.raises(ServedModelError) as err:
        down.complete("Hello?")
    assert str(err.value).startswith(
        f"Cannot reach the model server at http://127.0.0.1:{port}/v1"
    ) and "\n" not in str(err.value)
    wrong = ServedLLM(tokenizer=tokenizer, api_base=standin.url, served_model="my-model", max_retries=0)
    with pytest.raises(ServedModelError) as err:
        wrong.complete("Hello?")
    assert str(err.value) == (
        f"The server at {standin.url} does not serve 'my-model' (it serves 'tiny'): pass model=... with the name "
        "given to `vllm serve --served-model-name`."
    )


def test_from_finetuned_reads_the_layout_and_tokenizer_from_the_folder(
    tiny_llama_path: Path, standin: OpenAIStandIn, tmp_path: Path
) -> None:
    import shutil

    from llama_unsloth.layouts import PromptFormat

    folder = tmp_path / "merged"
    shutil.copytree(tiny_llama_path, folder)
    PromptFormat.from_j2(J2).save(folder)
    served = ServedLLM.from_finetuned(folder, api_base=standin.url, model="tiny", max_new_tokens=4)
    assert served.format.name == "QA_finetune_Instruction_Context_new"
    served.complete("Which treaty created Mercosur?")
    assert standin.prompts[-1].startswith("You are a brilliant Iranian professor") and standin.prompts[-1].endswith(
        "### RESPONSE:\n"
    )


def test_query_and_batch_recipes_answer_through_the_server(
    tiny_llama_path: Path,
    standin: OpenAIStandIn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    import json

    from recipes.batch import main as batch
    from recipes.query import main as query
    from tests.recipes._helpers import build_small_index, exit_code, reuse_embed_model

    reuse_embed_model(monkeypatch)
    persist = build_small_index(tmp_path)
    server = [
        "--llm-url",
        standin.url,
        "--served-model",
        "tiny",
        "--model",
        str(tiny_llama_path),
        "--persist-dir",
        str(persist),
        "--max-new-tokens",
        "8",
    ]
    before = len(standin.prompts)
    assert query(["--question", "Which countries founded Mercosur?", *server]) == 0
    assert "Answer: " in capsys.readouterr().out and len(standin.prompts) == before + 1
    questions = tmp_path / "q.txt"
    questions.write_text("Which countries founded Mercosur?\nWhat are rules of origin?\n", encoding="utf-8")
    assert batch(["--questions", str(questions), *server, "--out", str(tmp_path / "answers"), "--no-progress"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["instruction"] for r in rows] == ["Which countries founded Mercosur?", "What are rules of origin?"]
    assert len(standin.prompts) == before + 3
    # A wrong model name is one line, exit 2.
    capsys.readouterr()
    assert (
        exit_code(
            query,
            ["--question", "Which countries founded Mercosur?", *server[:2], "--served-model", "nope", *server[4:]],
        )
        == 2
    )
    assert capsys.readouterr().err.startswith("error: The server at ")


def test_generate_kwargs_reach_the_server_or_fail_naming_the_key(
    tiny_llama_path: Path, standin: OpenAIStandIn
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    served = ServedLLM(
        tokenizer=tokenizer,
        api_base=standin.url,
        served_model="tiny",
        max_new_tokens=4,
        max_retries=0,
        generate_kwargs={"repetition_penalty": 1.0, "seed": 7},
    )
    served.complete("Hello?")
    # vLLM's sampling extension goes in the body beside the OpenAI parameters; nothing is dropped on the way.
    assert standin.bodies[-1]["repetition_penalty"] == 1.0 and standin.bodies[-1]["seed"] == 7
    # A key no completions request carries: an error naming it, at construction and per call, before any request.
    with pytest.raises(ValueError, match="'no_repeat_ngram_size'"):
        ServedLLM(
            tokenizer=tokenizer,
            api_base=standin.url,
            served_model="tiny",
            generate_kwargs={"no_repeat_ngram_size": 3},
        )
    sent = standin.requests
    with pytest.raises(ValueError, match="'num_beams'"):
        served.complete("Hello?", num_beams=2)
    assert standin.requests == sent


@pytest.mark.parametrize("setting", [{"load_in_4bit": True}, {"fast_decode": True}, {"dtype": "bfloat16"}])
def test_settings_of_in_process_models_are_refused_not_ignored(tiny_llama_path: Path, setting: dict) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    with pytest.raises(ValueError, match=f"ServedLLM does not take {next(iter(setting))}"):
        ServedLLM(tokenizer=tokenizer, api_base="http://127.0.0.1:9/v1", served_model="tiny", **setting)
    # No stand-in model: what generates is the server.
    served = ServedLLM(tokenizer=tokenizer, api_base="http://127.0.0.1:9/v1", served_model="tiny")
    assert served.backend_name == "served" and not hasattr(served, "model")
