"""UnslothLLM on a tiny random Llama (transformers backend): generation, cleaning, budgets, threads."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from llama_unsloth import GenerationOutOfMemoryError, ModelLoadError, PromptFormat, PromptTooLongError, UnslothLLM

QUESTIONS = [
    "What is a customs union?",
    "Which bloc did Argentina found?",
    "Explain rules of origin in one sentence, please.",
    "hi",
    "How do non-tariff barriers differ from tariffs across the African continent?",
]


class ScriptedOutput(LogitsProcessor):
    """Forces the real model's generate() to emit a fixed token sequence (then optionally fails)."""

    def __init__(
        self, token_ids: List[int], fail_at: Optional[int] = None, error: Optional[BaseException] = None
    ) -> None:
        self.token_ids = token_ids
        self.fail_at = fail_at
        self.error = error or RuntimeError("scripted failure")
        self.start: Optional[int] = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        step = input_ids.shape[1] - self.start
        if self.fail_at is not None and step >= self.fail_at:
            raise self.error
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.token_ids[min(step, len(self.token_ids) - 1)]] = 0.0
        return forced


def scripted(llm: UnslothLLM, text: str, **kwargs: object) -> dict:
    ids = llm.tokenizer.encode(text, add_special_tokens=False)
    return {"logits_processor": LogitsProcessorList([ScriptedOutput(ids, **kwargs)])}


def test_metadata_reports_window_output_and_name(tiny_llm: UnslothLLM, tiny_llama_path: Path) -> None:
    meta = tiny_llm.metadata
    assert (meta.context_window, meta.num_output, meta.model_name) == (2048, 12, str(tiny_llama_path))
    assert tiny_llm.backend_name == "transformers"


def test_complete_returns_only_new_tokens_with_counts(tiny_llm: UnslothLLM) -> None:
    response = tiny_llm.complete(QUESTIONS[0])
    raw = response.raw
    # SmolLM2's own chat template (ChatML), the question as the user turn, open for the assistant's answer.
    assert raw["prompt"].startswith("<|im_start|>system\n")
    assert raw["prompt"].endswith(
        "<|im_end|>\n<|im_start|>user\nWhat is a customs union?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert raw["prompt_tokens"] == len(tiny_llm.tokenizer(raw["prompt"])["input_ids"])
    assert 0 < raw["completion_tokens"] <= 12
    assert raw["seconds"] > 0
    assert QUESTIONS[0] not in response.text
    assert response.text == response.text.strip()


def test_special_tokens_are_stripped_and_generation_stops_at_eos(tiny_llm: UnslothLLM) -> None:
    kwargs = scripted(tiny_llm, "Paris<|im_start|> is the capital.<|im_end|>more text after the end")
    response = tiny_llm.complete("Capital of France?", **kwargs)
    assert response.text == "Paris is the capital."
    assert response.raw["completion_tokens"] == len(
        tiny_llm.tokenizer.encode("Paris<|im_start|> is the capital.<|im_end|>")
    )


def test_stop_strings_end_generation_and_are_cut(tiny_llama_path: Path) -> None:
    llm = UnslothLLM(
        model_name=str(tiny_llama_path),
        load_in_4bit=False,
        max_new_tokens=30,
        prompt_format="alpaca",
        stop=["### Instruction:"],
        set_global_tokenizer=False,
    )
    response = llm.complete("Q?", **scripted(llm, "Mercosur.\n\n### Instruction:\nNext question that must not appear"))
    assert response.text == "Mercosur."
    assert "Next question" not in response.raw["generated"]  # generation itself stopped


def test_reasoning_answer_is_split_from_reasoning(tiny_llama_path: Path) -> None:
    llm = UnslothLLM(
        model_name=str(tiny_llama_path),
        load_in_4bit=False,
        max_new_tokens=40,
        prompt_format="reasoning",
        set_global_tokenizer=False,
    )
    response = llm.complete(
        "Why?", **scripted(llm, "First, tariffs fell.\n<|response|>Trade grew.<|endoftext|>ignored")
    )
    assert response.text == "Trade grew."
    assert response.raw["reasoning"] == "First, tariffs fell."
    assert llm.format_prompt("Why?").endswith("<|reasoning|>")
    chunks = list(llm.stream_complete("Why?", **scripted(llm, "Think.\n<|response|>Trade grew.<|endoftext|>")))
    assert "".join(c.delta for c in chunks) == "Trade grew."


def test_abstention_is_flagged(tiny_llm: UnslothLLM) -> None:
    assert (
        tiny_llm.complete("Who won?", **scripted(tiny_llm, "I don't know.<|im_end|>")).additional_kwargs["abstained"]
        is True
    )
    assert (
        tiny_llm.complete("Who won?", **scripted(tiny_llm, "Brazil won.<|im_end|>")).additional_kwargs["abstained"]
        is False
    )


def test_stream_matches_complete(tiny_llm: UnslothLLM) -> None:
    chunks = list(tiny_llm.stream_complete(QUESTIONS[1]))
    assert len(chunks) >= 2
    assert "".join(c.delta for c in chunks) == chunks[-1].text == tiny_llm.complete(QUESTIONS[1]).text


@pytest.mark.timeout(60)
def test_stream_error_reaches_consumer_without_hanging(tiny_llm: UnslothLLM) -> None:
    kwargs = scripted(tiny_llm, "one two three four five six seven", fail_at=3, error=RuntimeError("kernel exploded"))
    stream = tiny_llm.stream_complete("Q?", **kwargs)
    with pytest.raises(RuntimeError, match="kernel exploded"):
        for _ in stream:
            pass
    # The model lock was released: the next call runs (and is not fed the failed stream's leftovers).
    assert tiny_llm.complete("Q?", **scripted(tiny_llm, "after the error<|im_end|>")).text == "after the error"


def test_out_of_memory_is_reported_and_model_stays_usable(tiny_llm: UnslothLLM) -> None:
    kwargs = scripted(tiny_llm, "x", fail_at=0, error=torch.cuda.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(GenerationOutOfMemoryError, match="max_new_tokens"):
        tiny_llm.complete("Q?", **kwargs)
    assert tiny_llm.complete("Q?").raw["completion_tokens"] > 0


def test_chat_uses_chat_template(tiny_llm: UnslothLLM) -> None:
    from llama_index.core.llms import ChatMessage

    messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hello?")]
    response = tiny_llm.chat(messages)
    prompt = response.raw["prompt"]
    assert prompt.startswith(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert response.message.content == tiny_llm.complete(prompt, formatted=True).text
    streamed = list(tiny_llm.stream_chat(messages))
    assert streamed[-1].message.content == response.message.content


def test_batch_equals_sequential_under_greedy(tiny_llm: UnslothLLM) -> None:
    sequential = [tiny_llm.complete(q).text for q in QUESTIONS]
    batched = tiny_llm.complete_batch(QUESTIONS, batch_size=3)
    assert [r.text for r in batched] == sequential
    assert len(set(sequential)) > 1  # different prompts, different answers: the comparison means something


def test_prompt_over_budget_says_by_how_much(tiny_llama_path: Path) -> None:
    llm = UnslothLLM(
        model_name=str(tiny_llama_path),
        load_in_4bit=False,
        max_seq_length=64,
        max_new_tokens=16,
        set_global_tokenizer=False,
    )
    prompt = "trade " * 60
    n_prompt = len(llm.tokenizer(llm.format_prompt(prompt))["input_ids"])
    with pytest.raises(PromptTooLongError, match=f"by {n_prompt + 16 - 64} tokens"):
        llm.complete(prompt)
    with pytest.raises(PromptTooLongError):
        list(llm.stream_complete(prompt))


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt_is_rejected(tiny_llm: UnslothLLM, prompt: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        tiny_llm.complete(prompt)


def test_threads_are_serialized_and_never_mix(tiny_llm: UnslothLLM) -> None:
    expected = {q: tiny_llm.complete(q).text for q in QUESTIONS}
    active, peak = [0], [0]
    guard = threading.Lock()
    original = tiny_llm.model.generate

    def counting_generate(*args: object, **kwargs: object) -> object:
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.01)
            return original(*args, **kwargs)
        finally:
            with guard:
                active[0] -= 1

    tiny_llm.model.generate = counting_generate
    results: dict = {}
    errors: list = []

    def worker(index: int) -> None:
        question = QUESTIONS[index % len(QUESTIONS)]
        try:
            results[index] = (question, tiny_llm.complete(question).text)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert peak[0] == 1
    assert all(answer == expected[question] for question, answer in results.values())
    assert len(results) == 8


def test_async_complete_does_not_block_the_event_loop(tiny_llm: UnslothLLM) -> None:
    async def main() -> tuple:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        response = await tiny_llm.acomplete(QUESTIONS[2], max_new_tokens=40, min_new_tokens=40)
        stream = await tiny_llm.astream_complete(QUESTIONS[2])
        deltas = [chunk.delta async for chunk in stream]
        task.cancel()
        return response, ticks, deltas

    response, ticks, deltas = asyncio.run(main())
    assert response.raw["completion_tokens"] == 40
    assert ticks > 3
    assert "".join(deltas) == tiny_llm.complete(QUESTIONS[2]).text


def test_system_prompt_is_not_prepended_twice(tiny_llama_path: Path) -> None:
    from llama_index.core.prompts import PromptTemplate

    llm = UnslothLLM(
        model_name=str(tiny_llama_path),
        load_in_4bit=False,
        max_new_tokens=4,
        prompt_format="alpaca",
        system_prompt="You answer about trade.",
        set_global_tokenizer=False,
    )
    template = llm.qa_template()
    assert template.template.startswith("You answer about trade.\n\n### Instruction:")
    assert llm._get_prompt(template, query_str="Q", context_str="C") == template.format(query_str="Q", context_str="C")
    assert isinstance(llm.predict(PromptTemplate("Say {x}"), x="hi"), str)


def test_wraps_model_and_tokenizer_objects(tiny_llm: UnslothLLM) -> None:
    wrapped = UnslothLLM(
        model=tiny_llm.model,
        tokenizer=tiny_llm.tokenizer,
        prompt_format="alpaca",
        max_new_tokens=5,
        set_global_tokenizer=False,
    )
    assert wrapped.format.name == "alpaca"
    assert wrapped.complete("Q?").raw["completion_tokens"] <= 5
    with pytest.raises(ValueError, match="both"):
        UnslothLLM(model=tiny_llm.model)


def test_from_finetuned_uses_the_saved_layout(tiny_llama_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama_path, folder)
    PromptFormat.get("instruction-context").save(folder)
    llm = UnslothLLM.from_finetuned(folder, load_in_4bit=False, max_new_tokens=4, set_global_tokenizer=False)
    assert llm.format.name == "instruction-context"
    assert llm.qa_template().template.endswith("### CONTEXT:\n{context_str}\n\n### RESPONSE:\n")


def test_bad_model_paths_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        UnslothLLM(model_name=str(tmp_path / "missing"), set_global_tokenizer=False)
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelLoadError, match="not a model folder"):
        UnslothLLM(model_name=str(tmp_path), set_global_tokenizer=False)
    with pytest.raises(ValueError, match="Unknown backend"):
        UnslothLLM(model_name=str(tmp_path), backend="vllm", set_global_tokenizer=False)


def test_unsloth_backend_without_gpu_says_what_to_do(tiny_llama_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelLoadError, match="CUDA"):
        UnslothLLM(model_name=str(tiny_llama_path), backend="unsloth", set_global_tokenizer=False)


def test_4bit_on_cpu_warns_and_loads_full_precision(tiny_llama_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.warns(UserWarning, match="full precision"):
        llm = UnslothLLM(model_name=str(tiny_llama_path), max_new_tokens=2, set_global_tokenizer=False)
    assert next(llm.model.parameters()).dtype == torch.float32


def test_model_folder_code_runs_only_with_trust_remote_code(tiny_llama_path: Path, tmp_path: Path) -> None:
    import json

    folder = tmp_path / "shared-model"
    shutil.copytree(tiny_llama_path, folder)
    marker = tmp_path / "code-ran"
    (folder / "planted.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class PlantedConfig(LlamaConfig):\n    model_type = 'llama'\n"
        "class PlantedModel(LlamaForCausalLM):\n    config_class = PlantedConfig\n",
        encoding="utf-8",
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "planted.PlantedConfig", "AutoModelForCausalLM": "planted.PlantedModel"}
    (folder / "config.json").write_text(json.dumps(config))

    llm = UnslothLLM(model_name=str(folder), load_in_4bit=False, max_new_tokens=2, set_global_tokenizer=False)
    assert type(llm.model).__name__ == "LlamaForCausalLM"
    assert not marker.exists()

    UnslothLLM(
        model_name=str(folder),
        load_in_4bit=False,
        max_new_tokens=2,
        trust_remote_code=True,
        set_global_tokenizer=False,
    )
    assert marker.exists()  # the check above could fail: the planted code does run when trusted
