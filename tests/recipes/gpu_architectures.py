"""The plumbing of every recipe on the GPU, for one of our users' architectures (imported by ``test_gpu_<arch>.py``).

Each ``test_gpu_<arch>.py`` module sets ``ARCH`` (a key of ``benchmarks.architectures.ARCHITECTURES``) and
``WEIGHTS`` (``nf4``: a pre-quantized checkpoint, as ``unsloth/*-bnb-4bit`` downloads are; ``bf16``: a
16-bit one that Unsloth quantizes on load), then imports the tests below. A random-weight checkpoint
at the real widths with ``LAYERS`` decoder layers (reduced depth: the plumbing, not quality) and the
family's tokenizer stand-in goes through: ``finetune`` (Unsloth backend, 4-bit, SPEC defaults, a few
steps, ``--save merged_16bit``) -> the 4-bit merge -> ``UnslothLLM.from_finetuned`` of the adapter and
both merges -> a zero-config ``as_query_engine()`` answer -> the ``batch`` recipe over 8 questions.

GPU machine only: ``LLAMA_UNSLOTH_GPU_TOKENIZER`` names the SmolLM2 tokenizer folder the stand-ins are
built from; ``LLAMA_UNSLOTH_GPU_RESULTS`` (optional) a JSON Lines file collecting what each step measured
(BENCHMARKS.md "Our users' architectures").
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

# If Unsloth's compiled training step fails (torch inductor), the step is retried with the next switches, and
# test_finetune_needs_no_compile_workaround fails, saying which one was needed.
from benchmarks.gpu.finetune_memory import COMPILE_WORKAROUNDS, run_with_compile_workarounds

LAYERS = 2
STEPS = 3
BACKEND = "unsloth"
BUILD_OVERRIDES: Dict[str, Any] = {}
# The chat layout: each family's own chat template and turn tokens.
LAYOUT = "chat"
QUESTIONS = [
    "Which treaty created Mercosur?",
    "What does ASEAN aim at?",
    "関税同盟とは何ですか？",
    "Name a trade bloc in Africa.",
    "Why do rules of origin matter?",
    "What is a free trade area?",
    "EUの単一市場は何年に完成しましたか？",
    "What is a customs union?",
]
FAMILY_MARKERS = {
    "llama3-8b": "<|start_header_id|>user<|end_header_id|>",
    "mistral-nemo-12b": "[INST]",
    "phi3-medium-14b": "<|user|>",
    "gemma2-27b": "<start_of_turn>user",
}


def record(arch: str, step: str, **values: Any) -> None:
    """Appends what a step measured to ``$LLAMA_UNSLOTH_GPU_RESULTS`` (JSON Lines)."""
    path = os.environ.get("LLAMA_UNSLOTH_GPU_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"architecture": arch, "step": step, **values}, default=str) + "\n")


def _free_gpu() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_gib() -> Any:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


@pytest.fixture(scope="module")
def arch(request: pytest.FixtureRequest) -> str:
    return request.module.ARCH


@pytest.fixture(scope="module")
def work(arch: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp(arch)


@pytest.fixture(scope="module")
def checkpoint(arch: str, work: Path, request: pytest.FixtureRequest) -> Path:
    from benchmarks.architectures import family_tokenizer
    from benchmarks.gpu.checkpoints import build

    tokenizer = family_tokenizer(arch, base_dir=os.environ.get("LLAMA_UNSLOTH_GPU_TOKENIZER"))
    info = build(arch, work / "base", tokenizer, layers=LAYERS, weights=request.module.WEIGHTS, **BUILD_OVERRIDES)
    record(arch, "checkpoint", **info)
    _free_gpu()
    return work / "base"


@pytest.fixture(scope="module")
def finetuned(arch: str, checkpoint: Path, work: Path) -> Dict[str, Any]:
    """The finetune recipe in its own process (as users run it), retried with a compile switch if it fails."""
    records = [
        {"instruction": q, "input": "Mercosur was created in 1991 by the Treaty of Asuncion.", "output": "Asuncion."}
        for q in QUESTIONS
    ] * 4
    data = work / "train.json"
    data.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    out = work / "out"
    command = [
        sys.executable,
        "-m",
        "recipes.finetune",
        "--model",
        str(checkpoint),
        "--data",
        str(data),
        "--prompt-format",
        LAYOUT,
        "--backend",
        BACKEND,
        "--max-steps",
        str(STEPS),
        "--save",
        "merged_16bit",
        "--output-dir",
        str(out),
        # A retry with another compile workaround replaces what the failed attempt left.
        "--overwrite_output_dir",
    ]
    attempts = run_with_compile_workarounds(command, timeout=420 * len(COMPILE_WORKAROUNDS))
    for number, attempt in enumerate(attempts):
        output = attempt.pop("output")
        (work / f"finetune-{number}.log").write_text(output, encoding="utf-8")
    log = (
        json.loads((out / "train_log.json").read_text(encoding="utf-8")) if (out / "train_log.json").is_file() else {}
    )
    result = {"out": out, "attempts": attempts, "output": output, "log": log}
    record(
        arch,
        "finetune",
        attempts=attempts,
        peak_allocated_gib=log.get("peak_gpu_memory_gib"),
        peak_reserved_gib=log.get("peak_gpu_memory_reserved_gib"),
        median_step_seconds=log.get("median_step_seconds"),
        error_lines=[line for line in output.splitlines() if "Error" in line][-5:],
    )
    return result


def test_finetune_recipe_trains_and_merges(arch: str, finetuned: Dict[str, Any]) -> None:
    out = finetuned["out"]
    assert finetuned["attempts"][-1]["exit_code"] == 0, finetuned["output"][-4000:]
    log = finetuned["log"]
    assert log["backend"] == BACKEND and log["global_step"] == STEPS
    assert all(step["loss"] == step["loss"] for step in log["steps"])  # no NaN
    assert (out / "adapter_config.json").is_file() and (out / "prompt_format.json").is_file()
    merged = json.loads((out / "merged" / "config.json").read_text(encoding="utf-8"))
    assert "quantization_config" not in merged, "merged_16bit must be a 16-bit model"


def test_finetune_needs_no_compile_workaround(finetuned: Dict[str, Any]) -> None:
    used = [a["switches"] for a in finetuned["attempts"] if a["exit_code"] == 0]
    assert used == [{}], f"the finetune recipe needed {finetuned['attempts']}"


def test_lora_adapts_every_projection(arch: str, finetuned: Dict[str, Any]) -> None:
    from safetensors import safe_open

    # The saved weights, not adapter_config.json: Unsloth may write target_modules as a regular expression.
    with safe_open(str(finetuned["out"] / "adapter_model.safetensors"), framework="pt") as weights:
        names = list(weights.keys())
    targets = {name.split(".lora_A")[0].rsplit(".", 1)[-1] for name in names if ".lora_A" in name}
    per_layer = {i: sum(f"layers.{i}." in name and ".lora_A" in name for name in names) for i in range(LAYERS)}
    assert len(set(per_layer.values())) == 1, per_layer  # every layer adapted alike
    expected = (
        {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
        if arch.startswith("phi3")
        else {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    )
    assert targets == expected


@pytest.fixture(scope="module")
def merged_4bit(arch: str, finetuned: Dict[str, Any], work: Path) -> Path:
    """The trained adapter, reloaded on the Unsloth backend and merged to 4 bits by the recipe's own export."""
    from llama_unsloth import training as T
    from llama_unsloth.layouts import PromptFormat
    from llama_unsloth.models import load_model

    assert finetuned["attempts"][-1]["exit_code"] == 0, "finetune failed"
    out = finetuned["out"]
    model, tokenizer, backend = load_model(str(out), backend=BACKEND, for_training=True)
    began = time.time()
    folder = T.save_merged(model, tokenizer, PromptFormat.load(out), work / "merged4", "merged_4bit", backend)
    record(arch, "merged_4bit", seconds=round(time.time() - began, 1))
    del model
    _free_gpu()
    return folder


def test_merged_4bit_is_a_4bit_checkpoint(merged_4bit: Path) -> None:
    config = json.loads((merged_4bit / "config.json").read_text(encoding="utf-8"))
    assert config["quantization_config"]["load_in_4bit"] is True
    assert (merged_4bit / "prompt_format.json").is_file()


@pytest.fixture(params=["adapter", "merged_16bit", "merged_4bit"])
def model_folder(request: pytest.FixtureRequest, finetuned: Dict[str, Any]) -> Iterator[Path]:
    if request.param == "merged_4bit":
        yield request.getfixturevalue("merged_4bit")
    else:
        assert finetuned["attempts"][-1]["exit_code"] == 0, "finetune failed"
        yield finetuned["out"] if request.param == "adapter" else finetuned["out"] / "merged"
    _free_gpu()


def test_from_finetuned_answers_through_a_zero_config_query_engine(
    arch: str, model_folder: Path, generated: list, request: pytest.FixtureRequest
) -> None:
    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    from llama_unsloth import UnslothLLM

    llm = UnslothLLM.from_finetuned(
        model_folder,
        backend=BACKEND,
        max_new_tokens=16,
        generate_kwargs={"min_new_tokens": 2},
        set_global_tokenizer=True,  # no tiktoken data on the GPU machine
    )
    assert llm.backend_name == BACKEND
    saved = (Settings._llm, Settings._embed_model)
    try:
        Settings.llm, Settings.embed_model = llm, MockEmbedding(embed_dim=8)
        index = VectorStoreIndex.from_documents(
            [Document(text="Mercosur was created in 1991 by the Treaty of Asuncion.")]
        )
        response = index.as_query_engine().query("Which treaty created Mercosur?")
    finally:
        Settings._llm, Settings._embed_model = saved
    assert response.response is not None
    assert len(generated) == 1
    prompt = generated[0]
    assert FAMILY_MARKERS[arch] in prompt and "Treaty of Asuncion" in prompt
    bos = llm.tokenizer.bos_token
    if bos:
        assert prompt.startswith(bos) and not prompt.startswith(bos * 2), prompt[:80]
    # Decode speed at this depth (LAYERS layers: not the full model's), batch 1, 64 new tokens.
    _synchronize()
    began = time.perf_counter()
    completion = llm.complete("Why do rules of origin matter?", max_new_tokens=64, min_new_tokens=64)
    _synchronize()
    seconds = time.perf_counter() - began
    record(
        arch,
        f"query_engine[{request.node.callspec.params['model_folder']}]",
        answer=str(response)[:80],
        decode_tokens_per_second=round(64 / seconds, 1),
        completion_tokens=(completion.raw or {}).get("usage", {}).get("completion_tokens"),
        peak_allocated_gib=_peak_gib(),
    )
    del llm


def test_batch_recipe_answers_8_questions(arch: str, merged_4bit: Path, work: Path) -> None:
    questions = work / "questions.txt"
    questions.write_text("\n".join(QUESTIONS) + "\n", encoding="utf-8")
    out = work / "answers"
    began = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recipes.batch",
            "--questions",
            str(questions),
            "--model-dir",
            str(merged_4bit),
            "--no-rag",
            "--max-new-tokens",
            "16",
            "--batch-size",
            "8",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    (work / "batch.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    rows = [json.loads(line) for line in (work / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["instruction"] for r in rows] == QUESTIONS
    assert all(not r.get("error") for r in rows), rows
    assert (work / "answers.xlsx").is_file() and (work / "answers.csv").is_file()
    record(arch, "batch", questions=len(rows), seconds=round(time.time() - began, 1))
