"""Fixtures of the decoding tests: an UnslothLLM on the fast path (eager: CPU), and the GPU tests' models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llama_unsloth import UnslothLLM
from tests.llama_unsloth.decoding._gpu import peaked_llama


@pytest.fixture
def fast_llm(tiny_llama_path: Path) -> UnslothLLM:
    """The tiny Llama on the fast path's static-cache loop, without compile or graphs (runs on the CPU)."""
    return UnslothLLM(
        model_name=str(tiny_llama_path),
        load_in_4bit=False,
        max_new_tokens=12,
        max_seq_length=2048,
        fast_decode=True,
        fast_decode_mode="eager",
        set_global_tokenizer=False,
    )


@pytest.fixture(scope="module")
def gpu_model_name() -> str:
    """A real model folder for the GPU tests (``LLAMA_UNSLOTH_GPU_MODEL``); they skip without one."""
    name = os.environ.get("LLAMA_UNSLOTH_GPU_MODEL")
    if not name:
        pytest.skip("set LLAMA_UNSLOTH_GPU_MODEL to a model folder")
    return name


@pytest.fixture(scope="module")
def peaked_path(tmp_path_factory: pytest.TempPathFactory, gpu_model_name: str) -> Path:
    """A small random Llama with peaked logits, with the GPU model's tokenizer."""
    return peaked_llama(tmp_path_factory.mktemp("peaked"), Path(gpu_model_name))
