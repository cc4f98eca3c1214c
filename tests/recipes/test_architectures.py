"""End to end per architecture on CPU: each family fine-tuned in the ``chat`` layout until it answers a marker.

A tiny random model of each of our users' architectures (Llama-3, Mistral-Nemo, Phi-3, Gemma-2), with its family's
stand-in tokenizer and real chat template, is trained through the finetune recipe, reloaded with
``UnslothLLM.from_finetuned`` and asked through ``complete()`` and a zero-config query engine. The answer must be the
marker, generation must stop at the family's turn token (Gemma's ``<end_of_turn>``, Llama-3's ``<|eot_id|>``, Phi-3's
``<|end|>``, which are not their EOS; Nemo's ``</s>``), and the prompt handed to ``generate`` has one BOS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from benchmarks.architectures import TOKENIZER_FAMILIES, family_tokenizer
from tests.recipes._helpers import embed_model, finetune_recipe

pytestmark = pytest.mark.slow

MARKER = "Other"  # two tokens of the stand-in BPE
MAX_NEW_TOKENS = 16
CONTEXT = "Mercosur was founded by the Treaty of Asuncion in 1991."


def _records() -> List[Dict[str, Any]]:
    """Short questions, half with a context sentence (as the query engine sends), all answered with the marker."""
    questions = ["Which treaty created it?", "When was it founded?", "Who are the members?", "What does it do?"]
    return [
        {"instruction": f"{questions[i % 4]} ({i})", "input": CONTEXT if i % 2 else "", "output": MARKER}
        for i in range(16)
    ]


@pytest.mark.parametrize("name", sorted(TOKENIZER_FAMILIES))
def test_family_learns_the_marker_and_stops_at_its_turn_token(
    name: str, tmp_path: Path, smollm2_path: Path, generated: List[str]
) -> None:
    from llama_index.core import Document, Settings, VectorStoreIndex

    from llama_unsloth import UnslothLLM
    from tests.tiny_models import save_tiny_arch

    tokenizer = family_tokenizer(name, smollm2_path, vocab_size=4096)
    # No padding index: that embedding row would stay zero (and Gemma ties it to the output).
    model = save_tiny_arch(name, tmp_path / "base", tokenizer, pad_token_id=None)
    out = finetune_recipe(tmp_path, model, "chat", 100, ["--max-seq-length", "256"], _records())
    if name == "phi3-medium-14b":
        _assert_fused_projections_trained(out)

    llm = UnslothLLM.from_finetuned(out, backend="transformers", load_in_4bit=False, max_new_tokens=MAX_NEW_TOKENS)
    generated.clear()
    response = llm.complete("Which treaty created Mercosur?")
    assert response.text == MARKER, response.raw["generated"]
    # Stopped at the turn token right after the marker, far before max_new_tokens.
    n_marker = len(tokenizer(MARKER, add_special_tokens=False)["input_ids"])
    assert response.raw["completion_tokens"] == n_marker + 1, response.raw["generated"]
    index = VectorStoreIndex.from_documents([Document(text=CONTEXT)], embed_model=embed_model())
    saved = Settings._llm
    Settings.llm = llm
    try:
        assert str(index.as_query_engine().query("Which treaty created Mercosur?")) == MARKER
    finally:
        Settings._llm = saved
    assert len(generated) == 2
    for prompt in generated:
        assert prompt.startswith(tokenizer.bos_token) and prompt.count(tokenizer.bos_token) == 1, prompt[:60]


def _assert_fused_projections_trained(out: Path) -> None:
    from safetensors.torch import load_file

    config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert {"qkv_proj", "gate_up_proj"} <= set(config["target_modules"]), config["target_modules"]
    # The train log and the model card name what was adapted, not the seven names asked for.
    settings = json.loads((out / "train_log.json").read_text(encoding="utf-8"))["settings"]
    assert settings["target_modules"] == sorted(config["target_modules"])
    assert "qkv_proj" in (out / "README.md").read_text(encoding="utf-8")
    weights = load_file(str(out / "adapter_model.safetensors"))
    for module in ("qkv_proj", "gate_up_proj"):
        lora_b = [w for key, w in weights.items() if module in key and "lora_B" in key]
        assert lora_b and all(w.abs().sum() > 0 for w in lora_b)  # B starts at zero: non-zero means trained
