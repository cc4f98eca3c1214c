"""The families' tokenizer stand-ins: real special ids, roles, BOS behaviour and chat templates."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.architectures import ARCHITECTURES, TOKENIZER_FAMILIES, family_tokenizer

# The published ids of each family's special tokens.
REAL_IDS = {
    "llama3-8b": {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|start_header_id|>": 128006},
    "mistral-nemo-12b": {"<unk>": 0, "<s>": 1, "</s>": 2, "[INST]": 3, "[/INST]": 4, "<pad>": 10},
    "phi3-medium-14b": {"<unk>": 0, "<s>": 1, "</s>": 2, "<|endoftext|>": 32000, "<|assistant|>": 32001},
    "gemma2-27b": {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<start_of_turn>": 106, "<end_of_turn>": 107},
}
REAL_IDS["llama3-8b"].update({"<|end_header_id|>": 128007, "<|eot_id|>": 128009})
REAL_IDS["phi3-medium-14b"].update({"<|system|>": 32006, "<|end|>": 32007, "<|user|>": 32010})
ROLES = {  # bos, eos, pad
    "llama3-8b": ("<|begin_of_text|>", "<|end_of_text|>", None),
    "mistral-nemo-12b": ("<s>", "</s>", "<pad>"),
    "phi3-medium-14b": ("<s>", "<|endoftext|>", "<|placeholder6|>"),
    "gemma2-27b": ("<bos>", "<eos>", "<pad>"),
}


@pytest.mark.parametrize("name", sorted(TOKENIZER_FAMILIES))
def test_real_size_stand_in_has_the_real_ids_roles_and_bos_behaviour(name: str, smollm2_path: Path) -> None:
    family_tokenizer(name, smollm2_path, vocab_size=4096)  # imports warmed up: the timing is the build
    began = time.perf_counter()
    tokenizer = family_tokenizer(name, smollm2_path)
    assert time.perf_counter() - began < 5
    assert len(tokenizer) == TOKENIZER_FAMILIES[name].size
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in REAL_IDS[name]} == REAL_IDS[name]
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ROLES[name]
    ids = tokenizer("The customs union of Mercosur.")["input_ids"]
    # BOS once, no EOS; the text round-trips through the renumbered byte-level BPE.
    assert ids[0] == tokenizer.bos_token_id and tokenizer.bos_token_id not in ids[1:]
    assert ids[-1] != tokenizer.eos_token_id
    assert tokenizer.decode(ids[1:]) == "The customs union of Mercosur."
    assert len(set(tokenizer.get_vocab().values())) == len(tokenizer)


@pytest.mark.parametrize("name", sorted(TOKENIZER_FAMILIES))
def test_small_stand_in_keeps_the_specials_and_ends_of_turn(name: str, smollm2_path: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    family_tokenizer(name, smollm2_path, vocab_size=2048).save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)  # as a model folder loads it
    assert len(tokenizer) == 2048 and max(tokenizer.get_vocab().values()) == 2047
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Zebra"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    end = {"llama3-8b": "<|eot_id|>", "mistral-nemo-12b": "</s>", "phi3-medium-14b": "<|end|>"}
    assert text.rstrip().endswith("Zebra" + end.get(name, "<end_of_turn>"))
    if name in ("llama3-8b", "phi3-medium-14b"):  # the top block keeps its distance from the end
        token = "<|begin_of_text|>" if name == "llama3-8b" else "<|endoftext|>"
        distance = TOKENIZER_FAMILIES[name].size - REAL_IDS[name][token]
        assert tokenizer.convert_tokens_to_ids(token) == 2048 - distance
        assert tokenizer.convert_tokens_to_ids("<s>" if name != "llama3-8b" else "<|begin_of_text|>") == (
            1 if name != "llama3-8b" else 2048 - 256
        )
    else:
        assert all(tokenizer.convert_tokens_to_ids(t) == i for t, i in REAL_IDS[name].items())


def test_phi3_chat_tokens_swallow_the_newline_after_them(smollm2_path: Path) -> None:
    tokenizer = family_tokenizer("phi3-medium-14b", smollm2_path, vocab_size=4096)
    # As in the real tokenizer (rstrip=True): "<|end|>\n<|assistant|>\n" is two tokens.
    assert tokenizer.convert_ids_to_tokens(
        tokenizer("<|end|>\n<|assistant|>\n", add_special_tokens=False)["input_ids"]
    ) == [
        "<|end|>",
        "<|assistant|>",
    ]


def test_tiny_arch_models_are_their_family_with_the_tokenizer_ids(tmp_path: Path, smollm2_path: Path) -> None:
    from transformers import AutoConfig

    from tests.tiny_models import save_tiny_arch

    for name, architecture in ARCHITECTURES.items():
        tokenizer = family_tokenizer(name, smollm2_path, vocab_size=2048)
        config = AutoConfig.from_pretrained(save_tiny_arch(name, tmp_path / name, tokenizer))
        assert type(config).__name__ == architecture.config_class
        assert (config.vocab_size, config.bos_token_id, config.eos_token_id) == (
            2048,
            tokenizer.bos_token_id,
            tokenizer.eos_token_id,
        )
