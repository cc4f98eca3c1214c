"""The fast decode path (issue 13): static KV cache in length buckets, CUDA graphs, torchao weights.

On CPU (CI) the static-cache loop runs without compile or graphs (``fast_decode_mode="eager"``): it must give
exactly the tokens of ``generate`` with its dynamic cache. GPU tests (``-m gpu``) check the compiled path.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import pytest

from llama_unsloth import UnslothLLM
from llama_unsloth.decoding import fast as fd


@pytest.fixture
def fast_llm(tiny_llama_path: Path) -> UnslothLLM:
    return UnslothLLM(
        model_name=str(tiny_llama_path),
        load_in_4bit=False,
        max_new_tokens=12,
        max_seq_length=2048,
        fast_decode=True,
        fast_decode_mode="eager",
        set_global_tokenizer=False,
    )


def test_buckets_are_powers_of_two_up_to_the_window() -> None:
    assert fd.buckets(2048) == [256, 512, 1024, 2048]
    assert fd.buckets(3000) == [256, 512, 1024, 2048, 3000]
    assert [fd.bucket_for(n, 2048) for n in (1, 256, 257, 691, 2048)] == [256, 256, 512, 1024, 2048]
    assert [fd.batch_bucket(b) for b in (1, 2, 3, 5, 8)] == [1, 2, 4, 8, 8]
    with pytest.raises(ValueError):
        fd.bucket_for(2049, 2048)


def test_grouped_decode_attention_equals_transformers_attention() -> None:
    """One query token over a cache: GQA without K/V copies, left padding, float masks, Gemma-2's softcap."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward as gemma2_eager

    class Attention(torch.nn.Module):
        num_key_value_groups = 4
        is_causal = True

    module = Attention()
    torch.manual_seed(0)
    query, key, value = torch.randn(2, 8, 1, 16), torch.randn(2, 2, 40, 16), torch.randn(2, 2, 40, 16)
    mask = torch.ones(2, 1, 1, 40, dtype=torch.bool)
    mask[0, ..., :7] = False  # row 0 left-padded
    mask[..., 33:] = False  # cache slots not written yet
    ours, _ = fd.grouped_decode_attention(module, query, key, value, mask, scaling=0.25)
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    assert ours.shape == theirs.shape == (2, 1, 8, 16)
    torch.testing.assert_close(ours, theirs)
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    torch.testing.assert_close(
        fd.grouped_decode_attention(module, query, key, value, additive)[0],
        sdpa_attention_forward(module, query, key, value, additive)[0],
    )
    capped, _ = fd.grouped_decode_attention(module, query * 30, key, value, additive, scaling=0.25, softcap=5.0)
    expected, _ = gemma2_eager(module, query * 30, key, value, additive, scaling=0.25, softcap=5.0)
    torch.testing.assert_close(capped, expected)
    assert not torch.allclose(
        capped, fd.grouped_decode_attention(module, query * 30, key, value, additive, scaling=0.25)[0]
    )
    # A capped prompt (Gemma-2) takes the grouped path too, with or without transformers' causal mask.
    prompt = torch.randn(2, 8, 5, 16) * 30
    causal_additive = torch.zeros(1, 1, 5, 40).masked_fill(torch.ones(5, 40, dtype=torch.bool).tril(35) == 0, -1e30)
    expected, _ = gemma2_eager(module, prompt, key, value, causal_additive, scaling=0.25, softcap=5.0)
    for given in (causal_additive, None):
        torch.testing.assert_close(
            fd.grouped_decode_attention(module, prompt, key, value, given, scaling=0.25, softcap=5.0)[0], expected
        )
    prompt = torch.randn(2, 8, 5, 16)  # uncapped: transformers' SDPA itself
    causal = torch.ones(2, 1, 5, 40, dtype=torch.bool).tril(35)
    torch.testing.assert_close(
        fd.grouped_decode_attention(module, prompt, key, value, causal)[0],
        sdpa_attention_forward(module, prompt, key, value, causal)[0],
    )


def test_calls_longer_than_a_sliding_window_take_generate(
    fast_llm: UnslothLLM, tiny_llm: UnslothLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The static-cache mask has no sliding window (Phi-3-medium: 2047, Gemma-2: 4096): longer calls go to generate."""
    from tests.architectures import ARCHITECTURES

    assert [fd._sliding_window(ARCHITECTURES[n].config(num_hidden_layers=1)) for n in ARCHITECTURES] == [
        None,
        None,
        2047,
        4096,
    ]
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


def test_static_cache_path_gives_the_dynamic_cache_tokens_across_buckets(tiny_llm: UnslothLLM) -> None:
    import torch

    model, pad = tiny_llm.model, tiny_llm.tokenizer.pad_token_id
    # The decoder switches its model to the grouped decode attention; the reference keeps transformers' SDPA.
    decoder = fd.FastDecoder(copy.deepcopy(model), max_seq_length=512, mode="eager", min_bucket=32)
    assert decoder.stats.attention == fd.DECODE_ATTENTION and model.config._attn_implementation == "sdpa"
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


def test_bad_weights_value_names_the_field_and_the_fix(tiny_llama_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"weights='int3' \(UnslothLLM field 'weights'\): choose 'bf16'.*'int8' or 'int4'"
    ):
        UnslothLLM(model_name=str(tiny_llama_path), fast_decode=True, weights="int3")
    with pytest.raises(ValueError, match="pass fast_decode=True too"):
        UnslothLLM(model_name=str(tiny_llama_path), weights="int4")


def test_without_cuda_fast_decode_warns_once_and_answers(
    tiny_llama_path: Path, tiny_llm: UnslothLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("llama_unsloth.once._SEEN", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        llms = [
            UnslothLLM(
                model_name=str(tiny_llama_path), load_in_4bit=False, max_new_tokens=12, fast_decode=True, weights=w
            )
            for w in (None, None, "int4")
        ]
        answers = [llm.complete("What is a customs union?").text for llm in llms]
    messages = [str(w.message) for w in caught if "fast_decode" in str(w.message)]
    assert len(messages) == 1, messages  # once per reason (int4 without CUDA has the same one)
    assert all("no CUDA GPU" in m and "standard generate path" in m for m in messages)
    assert all(llm.fast_decoder is None and llm.backend_name == "transformers" for llm in llms)
    assert answers == [tiny_llm.complete("What is a customs union?").text] * 3
    assert llms[0].warm_up() == {}


def test_unsupported_generate_option_falls_back_for_that_call(
    fast_llm: UnslothLLM, tiny_llm: UnslothLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("llama_unsloth.once._SEEN", set())
    with pytest.warns(RuntimeWarning, match="repetition_penalty"):
        fast = fast_llm.complete("What is a customs union?", repetition_penalty=1.3)
    assert fast.text == tiny_llm.complete("What is a customs union?", repetition_penalty=1.3).text
    assert fast_llm.fast_decode_stats()["fallback_calls"] == 1 and fast_llm.fast_decoder is not None


def test_a_failing_decode_step_falls_back_once_and_answers(
    fast_llm: UnslothLLM, tiny_llm: UnslothLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self, *args, **kwargs):
        raise RuntimeError("inductor exploded")

    monkeypatch.setattr("llama_unsloth.once._SEEN", set())
    monkeypatch.setattr(fd.FastDecoder, "_prefill", broken)
    with pytest.warns(RuntimeWarning, match="inductor exploded"):
        first = fast_llm.complete("What is a customs union?")
    assert fast_llm.fast_decoder is None
    assert (
        first.text
        == fast_llm.complete("What is a customs union?").text
        == tiny_llm.complete("What is a customs union?").text
    )


def test_warm_up_builds_every_bucket_before_the_first_question(fast_llm: UnslothLLM) -> None:
    stats = fast_llm.warm_up()
    assert stats["slots"] == [(1, 256), (1, 512), (1, 1024), (1, 2048)] and stats["warm_up_seconds"] >= 0
    fast_llm.complete("What is a customs union?")
    assert len(fast_llm.fast_decode_stats()["slots"]) == 4


def test_patched_transformers_classes_are_not_run_by_the_fast_path(
    tiny_llama_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Unsloth does to transformers' Llama classes, done here by hand: the fast path loads a fresh copy."""
    from transformers.models.llama import modeling_llama

    def patched_forward(self, x):  # a stand-in for Unsloth's fast MLP
        raise AssertionError("patched code ran")

    monkeypatch.setattr(modeling_llama.LlamaMLP, "forward", patched_forward)
    model, _ = fd.load_fast_model(str(tiny_llama_path))
    assert "_llama_unsloth_pristine_" in type(model).__module__
    assert fd.foreign_forwards(model) == []
    patched = modeling_llama.LlamaForCausalLM.from_pretrained(str(tiny_llama_path))
    assert any("LlamaMLP" in f for f in fd.foreign_forwards(patched))
    with pytest.raises(fd.FastDecodeUnavailable, match="outside transformers"):
        fd.FastDecoder(patched, 256, mode="eager")


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
def _peaked_llama(folder: Path, tokenizer_path: Path) -> Path:
    """A small random Llama with peaked logits (greedy has no near-ties): equality tests on the GPU."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        initializer_range=0.3,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _assert_equal_but_for_ties(llm: UnslothLLM, ids: list, fast: list, eager: list, at_least: int = 32) -> None:
    """``fast`` equals ``eager`` for ``at_least`` tokens, or first differs where eager's top two logits tie in bf16.

    Random weights give flat logits: two candidates within bf16 rounding of each other are common, and which
    one wins depends on the order of float additions (fused kernels), not on a bug. A bug (a wrong position,
    mask or cache slot) changes the answer where the choice is clear.
    """
    import torch

    first = next((i for i, (a, b) in enumerate(zip(fast, eager)) if a != b), len(eager))
    if first >= at_least:
        return
    with torch.inference_mode():
        logits = llm.model(input_ids=torch.tensor([ids + eager[:first]], device="cuda")).logits[0, -1].float()
    top = torch.topk(logits, 2).values
    gap, scale = float(top[0] - top[1]), float(top[0].abs())
    assert gap <= 0.02 * scale + 1e-3, (
        f"fast and eager differ at token {first} where eager's choice was clear (gap {gap:.4f}, logit {scale:.2f})"
    )
    print(f"fast == eager for {first} tokens, then a near-tie (gap {gap:.4f} at logit {scale:.2f})")


@pytest.fixture(scope="module")
def gpu_model_name() -> str:
    name = os.environ.get("LLAMA_UNSLOTH_GPU_MODEL")
    if not name:
        pytest.skip("set LLAMA_UNSLOTH_GPU_MODEL to a model folder")
    return name


@pytest.fixture(scope="module")
def peaked_path(tmp_path_factory: pytest.TempPathFactory, gpu_model_name: str) -> Path:
    return _peaked_llama(tmp_path_factory.mktemp("peaked"), Path(gpu_model_name))


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
        ids = llm._encode(llm.completion_to_prompt_text(question))
        fast = llm._run_generate([ids], llm._generation_kwargs({}))[0][0, len(ids) :].tolist()
        with torch.inference_mode():
            eager = llm.model.generate(
                input_ids=torch.tensor([ids], device="cuda"),
                max_new_tokens=48,
                min_new_tokens=48,
                do_sample=False,
                pad_token_id=llm.tokenizer.pad_token_id,
            )[0, len(ids) :].tolist()
        _assert_equal_but_for_ties(llm, ids, fast, eager)
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


@pytest.mark.gpu
def test_gpu_fast_path_after_unsloth_patched_transformers(peaked_path: Path) -> None:
    """Unsloth loaded a model first (patching transformers' Llama classes); the fast path still runs transformers' code."""
    import torch
    import unsloth  # noqa: F401
    from unsloth import FastLanguageModel

    unsloth_model, _ = FastLanguageModel.from_pretrained(
        str(peaked_path), max_seq_length=1024, load_in_4bit=True, dtype=None
    )
    del unsloth_model
    from transformers.models.llama import modeling_llama

    print("patched by Unsloth:", fd._module_is_patched(modeling_llama))
    llm = UnslothLLM(
        model_name=str(peaked_path),
        fast_decode=True,
        max_new_tokens=40,
        max_seq_length=1024,
        generate_kwargs={"min_new_tokens": 40},
        set_global_tokenizer=True,
    )
    assert llm.fast_decoder is not None
    assert fd.foreign_forwards(llm.model) == [] and "_llama_unsloth_pristine_" in type(llm.model).__module__
    ids = llm._encode(llm.completion_to_prompt_text("What is a customs union?"))
    fast = llm._run_generate([ids], llm._generation_kwargs({}))[0][0, len(ids) :].tolist()
    with torch.inference_mode():
        eager = llm.model.generate(
            input_ids=torch.tensor([ids], device="cuda"),
            max_new_tokens=40,
            min_new_tokens=40,
            do_sample=False,
            pad_token_id=llm.tokenizer.pad_token_id,
        )[0, len(ids) :].tolist()
    _assert_equal_but_for_ties(llm, ids, fast, eager)
