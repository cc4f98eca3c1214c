"""Per-architecture correctness on CPU: each family's stand-in tokenizer and real chat template, tiny random models.

Turn-end tokens end generation in the ``chat`` layout, system text survives templates that reject or drop it,
chat history renders with strict templates, one BOS per prompt in every layout, unusable pad ids, fused LoRA targets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest

from benchmarks.architectures import TOKENIZER_FAMILIES, family_tokenizer
from llama_unsloth.layouts import BUILTIN_FORMATS, PromptFormat, encode_prompt
from llama_unsloth.training.data import tokenize_record

FAMILIES = sorted(TOKENIZER_FAMILIES)
TURN_END = {
    "llama3-8b": "<|eot_id|>",
    "mistral-nemo-12b": "</s>",
    "phi3-medium-14b": "<|end|>",
    "gemma2-27b": "<end_of_turn>",
}
TEMPLATES = Path(__file__).resolve().parents[3] / "examples" / "templates"
# Every layout the one-BOS check runs: the built-ins and our users' four templates (with the fields their tests use).
LAYOUTS: Dict[str, Any] = {
    **{name: (name, None) for name in BUILTIN_FORMATS},
    "QA_finetune_Instruction_Context_new.j2": (str(TEMPLATES / "QA_finetune_Instruction_Context_new.j2"), None),
    "phi3_reasoning.j2": (str(TEMPLATES / "phi3_reasoning.j2"), None),
    "alpaca_dont_know.txt": (str(TEMPLATES / "alpaca_dont_know.txt"), ["instruction", "input", "output"]),
    "alpaca_rag_inference.txt": (str(TEMPLATES / "alpaca_rag_inference.txt"), ["instruction", "input", "context"]),
}
RECORD = {
    "instruction": "Which treaty created Mercosur?",
    "str_instruction": "Which treaty created Mercosur?",
    "input": "",
    "context": "The Treaty of Asuncion.",
    "str_context": "The Treaty of Asuncion.",
    "reasoning": "Step.",
    "output": "Zebra",
    "answer": "Zebra",
    "str_answer": "Zebra",
    "flag": "logician",
}


@pytest.fixture(scope="module")
def tokenizers(smollm2_path: Path) -> Dict[str, Any]:
    return {name: family_tokenizer(name, smollm2_path, vocab_size=2048) for name in FAMILIES}


@pytest.mark.parametrize("name", FAMILIES)
def test_chat_turn_end_is_read_from_the_template(name: str, tokenizers: Dict[str, Any]) -> None:
    assert PromptFormat.get("chat").turn_end_tokens(tokenizers[name]) == [TURN_END[name]]


def test_chat_turn_end_of_smollm2_is_im_end(smollm2_path: Path) -> None:
    from transformers import AutoTokenizer

    assert PromptFormat.get("chat").turn_end_tokens(AutoTokenizer.from_pretrained(smollm2_path)) == ["<|im_end|>"]


@pytest.mark.parametrize("name", FAMILIES)
def test_chat_training_ids_end_with_the_turn_end_after_the_answer(name: str, tokenizers: Dict[str, Any]) -> None:
    tokenizer = tokenizers[name]
    ids = tokenize_record(RECORD, PromptFormat.get("chat"), tokenizer)["input_ids"]
    answer = tokenizer("Zebra", add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids(TURN_END[name])
    at = max(i for i in range(len(ids)) if ids[i : i + len(answer)] == answer)
    assert ids[at + len(answer)] == end  # what generation stops at comes right after the answer


@pytest.mark.parametrize("name", FAMILIES)
def test_system_text_survives_every_template(name: str, tokenizers: Dict[str, Any]) -> None:
    tokenizer, fmt = tokenizers[name], PromptFormat.get("chat")
    # Gemma's template raises on a system message, Phi-3-medium's drops it, Nemo's drops it from a training text.
    prompt = fmt.render_prompt("Which treaty?", "Asuncion.", system="SYSTEM-TEXT", tokenizer=tokenizer)
    assert "SYSTEM-TEXT" in prompt and "Which treaty?" in prompt
    split_prompt, completion = fmt.split_training(RECORD, system="SYSTEM-TEXT", tokenizer=tokenizer)
    assert "SYSTEM-TEXT" in split_prompt and completion.startswith("Zebra")
    assert split_prompt == fmt.render_prompt(
        RECORD["instruction"], RECORD["context"], system="SYSTEM-TEXT", tokenizer=tokenizer
    )


@pytest.mark.parametrize("name", FAMILIES)
def test_chat_history_renders_with_strict_templates(name: str, tokenizers: Dict[str, Any]) -> None:
    # A greeting before any question and two user turns in a row: Gemma's and Nemo's templates reject both.
    history = [("assistant", "Hello, ask me."), ("user", "About Mercosur."), ("user", "And its members.")]
    prompt = PromptFormat.get("chat").render_prompt("Which treaty?", history=history, tokenizer=tokenizers[name])
    for text in ("Hello, ask me.", "About Mercosur.", "And its members.", "Which treaty?"):
        assert text in prompt


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", FAMILIES)
def test_one_bos_per_prompt_and_training_text(name: str, layout: str, tokenizers: Dict[str, Any]) -> None:
    tokenizer = tokenizers[name]
    source, fields = LAYOUTS[layout]
    fmt = PromptFormat.get(source, fields=fields)
    bos = tokenizer.bos_token_id
    prompt_ids = encode_prompt(tokenizer, fmt.render_prompt(RECORD["instruction"], "Asuncion.", tokenizer=tokenizer))
    train_ids = tokenize_record(RECORD, fmt, tokenizer)["input_ids"]
    for ids in (prompt_ids, train_ids):
        assert ids[0] == bos and ids.count(bos) == 1, tokenizer.decode(ids[:8])


def _tiny_llm(folder: Path, **kwargs: Any) -> Any:
    from llama_unsloth import UnslothLLM

    return UnslothLLM(
        model_name=str(folder),
        backend="transformers",
        load_in_4bit=False,
        max_new_tokens=6,
        set_global_tokenizer=False,
        **kwargs,
    )


@pytest.mark.parametrize("name", FAMILIES)
def test_llm_stops_at_the_chat_turn_end(name: str, tokenizers: Dict[str, Any], tmp_path: Path) -> None:
    from tests.tiny_models import save_tiny_arch

    llm = _tiny_llm(save_tiny_arch(name, tmp_path / name, tokenizers[name]))
    end = tokenizers[name].convert_tokens_to_ids(TURN_END[name])
    assert end in llm._stop_token_ids and TURN_END[name] in llm._end_token_texts
    # Text after the turn end never reaches the answer.
    assert llm._postprocess(f"Zebra{TURN_END[name]}\nrest")[0] == "Zebra"


def test_batch_pads_with_eos_when_the_pad_token_is_beyond_the_embeddings(
    tokenizers: Dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AutoTokenizer

    from tests.tiny_models import save_tiny_arch

    folder = save_tiny_arch("llama3-8b", tmp_path / "m", tokenizers["llama3-8b"])
    # What Unsloth's loader does to a tokenizer without a usable pad token: a new token, no embedding row.
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_special_tokens({"pad_token": "<|PAD_TOKEN|>"})
    assert tokenizer.pad_token_id == 2048
    from transformers import AutoModelForCausalLM

    from llama_unsloth import UnslothLLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    with caplog.at_level("WARNING", logger="llama_unsloth.llms.unsloth"):
        llm = UnslothLLM(model=model, tokenizer=tokenizer, prompt_format="alpaca", max_new_tokens=6)
    assert "padding batched prompts with EOS" in caplog.text
    questions = ["Which treaty created Mercosur?", "Who?"]
    batched = [r.text for r in llm.complete_batch(questions, batch_size=2)]
    assert batched == [llm.complete(q).text for q in questions]


def test_lora_targets_map_onto_phi3_fused_projections(tokenizers: Dict[str, Any], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from llama_unsloth.errors import OptionError
    from llama_unsloth.training.arguments import TARGET_MODULES
    from llama_unsloth.training.trainer import map_target_modules
    from tests.tiny_models import save_tiny_arch

    model = AutoModelForCausalLM.from_pretrained(
        save_tiny_arch("phi3-medium-14b", tmp_path, tokenizers["phi3-medium-14b"])
    )
    assert map_target_modules(model, list(TARGET_MODULES)) == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    with pytest.raises(OptionError, match=r"--target-modules w_proj .*qkv_proj"):
        map_target_modules(model, ["q_proj", "w_proj"])


def test_final_eos_label_is_kept_when_pad_is_eos(tokenizers: Dict[str, Any], tmp_path: Path) -> None:
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llama_unsloth.training.arguments import FinetuneSFTConfig
    from llama_unsloth.training.data import to_text_dataset
    from llama_unsloth.training.trainer import build_trainer
    from tests.tiny_models import save_tiny_arch

    folder = save_tiny_arch("mistral-nemo-12b", tmp_path / "m", tokenizers["mistral-nemo-12b"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.eos_token  # pad == eos, as many notebooks set it
    data = tmp_path / "d.json"
    data.write_text(json.dumps([RECORD, {**RECORD, "instruction": "Longer question about the bloc?"}]))
    dataset = to_text_dataset(data, PromptFormat.get("alpaca"), tokenizer, 256)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder), LoraConfig(target_modules=["q_proj"]))
    trainer = build_trainer(
        model,
        tokenizer,
        dataset,
        FinetuneSFTConfig(output_dir=str(tmp_path / "o"), report_to=[]),
        "transformers",
        "false",
    )
    batch = trainer.data_collator([dataset[0], dataset[1]])
    for row, example in zip(batch["labels"].tolist(), (dataset[0], dataset[1])):
        kept = [label for label in row if label != -100]
        assert kept[-1] == tokenizer.eos_token_id and example["input_ids"][-1] == tokenizer.eos_token_id


@pytest.mark.parametrize("name", FAMILIES)
def test_fast_decode_gives_each_familys_eager_attention_tokens(
    name: str, tokenizers: Dict[str, Any], tmp_path: Path
) -> None:
    """The static-cache loop with the grouped one-token attention, per family, against transformers' eager path.

    Gemma-2's attention softcap is set low (0.5) so that it decides tokens: transformers' SDPA path drops it,
    eager applies it, and the fast path must apply it in the prompt and in every new token.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from llama_unsloth.decoding.attention import DECODE_ATTENTION
    from llama_unsloth.decoding.buckets import buckets
    from llama_unsloth.decoding.decoder import FastDecoder
    from tests.tiny_models import save_tiny_arch

    extra: Dict[str, Any] = {"attn_logit_softcapping": 0.5} if name == "gemma2-27b" else {}
    if name in ("phi3-medium-14b", "gemma2-27b"):
        extra["sliding_window"] = 100  # the window is longer than the call, as Phi-3's 2047 and Gemma-2's 4096 are
    folder = save_tiny_arch(name, tmp_path / name, tokenizers[name], **extra)
    reference = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    decoder = FastDecoder(
        AutoModelForCausalLM.from_pretrained(folder).eval(), max_seq_length=256, mode="eager", min_bucket=64
    )
    assert decoder.stats.attention == DECODE_ATTENTION
    if extra.get("sliding_window"):  # buckets stop at the window: 64, then 100
        assert decoder.max_seq_length == 100 and buckets(decoder.max_seq_length, 64) == [64, 100]
    torch.manual_seed(0)
    ids = torch.randint(200, 2000, (1, 40))
    gen = {
        "max_new_tokens": 12,
        "do_sample": False,
        "pad_token_id": tokenizers[name].eos_token_id,
        "eos_token_id": None,
    }
    with torch.inference_mode():
        expected = reference.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **gen)
    assert torch.equal(decoder.generate(ids, torch.ones_like(ids), gen), expected)
    # Batch 2, the second row left-padded: its pad positions see no key, which must not turn into NaNs.
    pad = tokenizers[name].eos_token_id
    batch = torch.cat([ids, torch.cat([torch.full((1, 6), pad), ids[:, 6:]], dim=1)])
    mask = torch.ones_like(batch)
    mask[1, :6] = 0
    with torch.inference_mode():
        expected = reference.generate(input_ids=batch, attention_mask=mask, **gen)
    assert torch.equal(decoder.generate(batch, mask, gen), expected)
