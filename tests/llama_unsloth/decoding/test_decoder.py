"""The fast decode loop (issue 13): static KV cache in length buckets, CUDA graphs, torchao weights.

On CPU (CI) the static-cache loop runs without compile or graphs (``fast_decode_mode="eager"``): it must give
exactly the tokens of ``generate`` with its dynamic cache. GPU tests (``-m gpu``) check the compiled path.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from llama_unsloth import UnslothLLM
from llama_unsloth.decoding import decoder as dec
from llama_unsloth.decoding.attention import DECODE_ATTENTION
from tests.llama_unsloth.decoding._gpu import assert_fast_equals_eager


def test_static_cache_path_gives_the_dynamic_cache_tokens_across_buckets(tiny_llm: UnslothLLM) -> None:
    import torch

    model, pad = tiny_llm.model, tiny_llm.tokenizer.pad_token_id
    # The decoder switches its model to the grouped decode attention; the reference keeps transformers' SDPA.
    decoder = dec.FastDecoder(copy.deepcopy(model), max_seq_length=512, mode="eager", min_bucket=32)
    assert decoder.stats.attention == DECODE_ATTENTION and model.config._attn_implementation == "sdpa"
    gen = {"max_new_tokens": 10, "do_sample": False, "pad_token_id": pad, "eos_token_id": None}
    torch.manual_seed(1)
    for n in (3, 21, 22, 23, 40, 150):  # 22 + 10 fills bucket 32 exactly; 23 crosses into 64
        ids = torch.randint(5, 4000, (1, n))
        expected = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **gen)
        assert torch.equal(decoder.generate(ids, torch.ones_like(ids), gen), expected), n
    batch = tiny_llm.tokenizer.pad(
        {"input_ids": [[7, 8, 9, 10, 11, 12], [13, 14]]}, padding=True, padding_side="left", return_tensors="pt"
    )
    expected = model.generate(**batch, **gen)
    assert torch.equal(
        decoder.generate(batch["input_ids"], batch["attention_mask"], gen), expected
    )  # batch 2, left padding
    assert sorted(decoder.stats.slots) == [(1, 32), (1, 64), (1, 256), (2, 32)]


def test_fast_answers_equal_todays_answers(tiny_llm: UnslothLLM, fast_llm: UnslothLLM) -> None:
    assert fast_llm.backend_name == "fast-decode" and fast_llm.fast_decoder is not None
    questions = ["What is a customs union?", "Name a trade bloc. " * 30]
    assert [fast_llm.complete(q).text for q in questions] == [tiny_llm.complete(q).text for q in questions]
    assert [r.text for r in fast_llm.complete_batch(questions, batch_size=2)] == [
        r.text for r in tiny_llm.complete_batch(questions, batch_size=2)
    ]
    streamed = list(fast_llm.stream_complete(questions[0]))
    assert streamed[-1].text == tiny_llm.complete(questions[0]).text
    assert fast_llm.fast_decode_stats()["fast_calls"] == 4  # 2 complete, 1 batch of 2, 1 stream


def test_stop_strings_and_eos_end_generation_on_the_fast_path(tiny_llm: UnslothLLM, fast_llm: UnslothLLM) -> None:
    free = tiny_llm.complete("What is a customs union?", max_new_tokens=12)
    ids = tiny_llm.tokenizer.encode(free.raw["generated"], add_special_tokens=False)
    stop_text = tiny_llm.tokenizer.decode(ids[4:6])
    fast_llm.stop = [stop_text]
    tiny_llm.stop = [stop_text]
    fast, today = fast_llm.complete("What is a customs union?"), tiny_llm.complete("What is a customs union?")
    assert fast.text == today.text and fast.raw["completion_tokens"] == today.raw["completion_tokens"] < 12
    # EOS: the fourth generated token declared an end token ends the answer there.
    eos = ids[3]
    fast_llm.stop, tiny_llm.stop = [], []
    fast_llm._stop_token_ids = tiny_llm._stop_token_ids = [eos]
    fast, today = fast_llm.complete("What is a customs union?"), tiny_llm.complete("What is a customs union?")
    assert fast.raw["completion_tokens"] == today.raw["completion_tokens"] == ids.index(eos) + 1
    assert fast.text == today.text


def test_calls_longer_than_a_sliding_window_take_generate(
    fast_llm: UnslothLLM, tiny_llm: UnslothLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The static-cache mask has no sliding window (Phi-3-medium: 2047, Gemma-2: 4096): longer calls go to generate."""
    monkeypatch.setattr("llama_unsloth.once._SEEN", set())
    short = fast_llm.complete("Trade?")
    window = short.raw["prompt_tokens"] + 12  # "Trade?" + 12 new tokens fit exactly
    fast_llm.fast_decoder.sliding_window = fast_llm.fast_decoder.max_seq_length = window  # as __init__ sets them
    assert fast_llm.complete("Trade?").text == short.text
    assert fast_llm.fast_decode_stats()["fallback_calls"] == 0
    question = "What is a customs union between the regional trade blocs of the south?"
    with pytest.warns(RuntimeWarning, match="sliding attention window"):
        long = fast_llm.complete(question)
    assert fast_llm.fast_decode_stats()["fallback_calls"] == 1 and fast_llm.fast_decoder is not None
    assert long.text == tiny_llm.complete(question).text and short.text == tiny_llm.complete("Trade?").text
    slots = list(fast_llm.fast_decode_stats()["slots"])
    assert fast_llm.warm_up([window + 100])["slots"] == slots  # a length past the window: nothing to build


def test_warm_up_builds_every_bucket_before_the_first_question(fast_llm: UnslothLLM) -> None:
    stats = fast_llm.warm_up()
    assert stats["slots"] == [(1, 256), (1, 512), (1, 1024), (1, 2048)] and stats["warm_up_seconds"] >= 0
    fast_llm.complete("What is a customs union?")
    assert len(fast_llm.fast_decode_stats()["slots"]) == 4


@pytest.mark.slow
def test_query_engine_answer_is_the_same_with_fast_decode_on_and_off(
    tiny_llm: UnslothLLM, fast_llm: UnslothLLM, recorded_prompts: list
) -> None:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    documents = [
        Document(text="Mercosur was created in 1991 by the Treaty of Asuncion."),
        Document(text="ASEAN's economic community aims at a single market and production base."),
    ]
    index = VectorStoreIndex.from_documents(documents, embed_model=MockEmbedding(embed_dim=8))
    answers = []
    for llm in (tiny_llm, fast_llm):
        engine = index.as_query_engine(llm=llm, similarity_top_k=2)
        answers.append(str(engine.query("Which treaty created Mercosur?")))
        chat = index.as_chat_engine(llm=llm, chat_mode="context")
        answers.append(str(chat.chat("Which treaty created Mercosur?")))
    assert answers[:2] == answers[2:]
    assert recorded_prompts[0] == recorded_prompts[2]
    assert fast_llm.fast_decode_stats()["fast_calls"] == 2


# ---------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["compile", "graphs"])
def test_gpu_greedy_bf16_fast_path_equals_eager_bf16(peaked_path: Path, mode: str) -> None:
    import torch

    llm = UnslothLLM(
        model_name=str(peaked_path),
        fast_decode=True,
        weights="bf16",
        fast_decode_mode=mode,
        max_new_tokens=48,
        max_seq_length=1024,
        generate_kwargs={"min_new_tokens": 48},
        set_global_tokenizer=True,
    )
    assert llm.fast_decoder is not None and next(llm.model.parameters()).dtype == torch.bfloat16
    for question in ["What is a customs union?", "Name a trade bloc in South America. " * 20]:
        assert_fast_equals_eager(llm, question, 48)
    assert llm.fast_decode_stats()["graphs"] >= 1


@pytest.mark.gpu
def test_gpu_compiled_graphs_stay_bounded_over_varied_prompt_lengths(peaked_path: Path) -> None:
    llm = UnslothLLM(
        model_name=str(peaked_path), fast_decode=True, max_new_tokens=8, max_seq_length=1024, set_global_tokenizer=True
    )
    for n in range(1, 60, 3):
        assert llm.complete("trade " * (n * 15)).raw["completion_tokens"] >= 1
    stats = llm.fast_decode_stats()
    assert stats["disabled"] is None
    assert stats["graphs"] <= 3 and stats["compiles"] <= 6, stats  # buckets 256, 512, 1024


@pytest.mark.gpu
def test_gpu_int4_runs_and_answers(gpu_model_name: str) -> None:
    llm = UnslothLLM(
        model_name=gpu_model_name,
        fast_decode=True,
        weights="int4",
        fast_decode_mode="graphs",
        max_new_tokens=16,
        generate_kwargs={"min_new_tokens": 16},
        prompt_format="alpaca-context",
        set_global_tokenizer=True,
    )
    assert llm.fast_decoder is not None, "int4 fell back"
    assert "Int4" in type(llm.model.model.layers[0].mlp.down_proj.weight).__name__
    response = llm.complete("Which treaty created Mercosur?")
    assert response.raw["completion_tokens"] == 16
    assert [r.raw["completion_tokens"] for r in llm.complete_batch(["a?", "b b b?", "c?"], batch_size=3)] == [
        16,
        16,
        16,
    ]
    # A prompt of hundreds of tokens multiplies unpacked bf16 weights: the same logits as tinygemm's product.
    import torch

    decoder = llm.fast_decoder
    assert decoder.stats.prefill == "int4 unpacked to bf16" and decoder._prefill_mode is not None
    ids = torch.tensor([llm._encode("The bloc expanded its membership and trade grew. " * 40)], device="cuda")
    slot = decoder._slot(1, 1024)
    with torch.inference_mode():
        calls = decoder._prefill_mode.calls
        unpacked = decoder._prefill(slot, ids, torch.ones_like(ids))
        assert decoder._prefill_mode.calls > calls
        mode, decoder._prefill_mode = decoder._prefill_mode, None
        tinygemm_logits = decoder._prefill(slot, ids, torch.ones_like(ids))
        decoder._prefill_mode = mode
    gap = (unpacked - tinygemm_logits).abs().max().item()
    assert gap <= 0.05 * tinygemm_logits.abs().max().item() + 0.05, gap
