"""Token ids of prompts and training examples, and the one list of special tokens we know by their text.

Training and inference tokenize through the same two functions, so the ids the trainer sees up to the answer
are exactly the ids ``generate`` receives. :data:`KNOWN_SPECIAL_TOKENS` is the single list of turn and
sequence markers: answer cleaning removes them, layouts read their end markers and stop strings from it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Set, Tuple

# Each known token with what it marks: "begin" (a text or turn starts), "end" (a text or turn ends), or
# "other" (padding, unknown text, a role name). One table, so the lists below cannot drift apart.
_SPECIAL_TOKEN_KINDS: Dict[str, str] = {
    "<s>": "begin",
    "</s>": "end",
    "<pad>": "other",
    "<unk>": "other",
    "<|endoftext|>": "end",
    "<|im_start|>": "begin",
    "<|im_end|>": "end",
    "<|begin_of_text|>": "begin",
    "<|eot_id|>": "end",
    "<|end_of_text|>": "end",
    "<|end|>": "end",
    "<|assistant|>": "other",
    "<end_of_turn>": "end",
    "<start_of_turn>": "begin",
    "<bos>": "begin",
    "<eos>": "end",
}

#: Turn and sequence markers of common model families (Llama-2/Mistral, Llama-3, ChatML, Phi-3, Gemma),
#: removed from answers when they leak into the generated text.
KNOWN_SPECIAL_TOKENS: Tuple[str, ...] = tuple(_SPECIAL_TOKEN_KINDS)

#: The known tokens that end a text or a turn: a template that writes one after the answer needs no EOS.
END_MARKERS: Tuple[str, ...] = tuple(t for t, kind in _SPECIAL_TOKEN_KINDS.items() if kind == "end")

#: The known tokens that begin or end a text or a turn: written in a layout's fixed text, they are stop strings.
BOUNDARY_TOKENS: Tuple[str, ...] = tuple(t for t, kind in _SPECIAL_TOKEN_KINDS.items() if kind != "other")


def tokenizer_special_tokens(tokenizer: Any) -> Set[str]:
    """The texts of a tokenizer's special tokens: its named ones and every added token marked special."""
    specials = set(getattr(tokenizer, "all_special_tokens", ()) or ())
    # Added tokens marked special count too: the real Phi-3's <|end|> is one, yet in no named role.
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    specials |= {t.content for t in decoder.values() if getattr(t, "special", False)}
    return specials


def encode_prompt(tokenizer: Any, text: str) -> List[int]:
    """Token ids of a prompt as the model receives it: the tokenizer's BOS once, never twice.

    The tokenizer's special tokens are added unless the text already starts with its BOS marker (the
    reasoning layout's ``<s>``, most chat templates); an EOS some tokenizers append is dropped. The
    finetune recipe tokenizes training prompts with this same function, so the ids the trainer sees up
    to the answer are exactly the ids ``generate`` receives.

    Args:
        tokenizer: A Hugging Face tokenizer.
        text: The rendered prompt.

    Returns:
        The token ids.
    """
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    ids = list(tokenizer(text, add_special_tokens=add_special)["input_ids"])
    eos, eos_id = getattr(tokenizer, "eos_token", None), getattr(tokenizer, "eos_token_id", None)
    if add_special and ids and eos_id is not None and ids[-1] == eos_id and not (eos and text.endswith(eos)):
        ids.pop()
    return ids


def encode_training(tokenizer: Any, prompt: str, completion: str) -> List[int]:
    """Token ids of one training example: :func:`encode_prompt` of the prompt, then the completion's tokens.

    Args:
        tokenizer: A Hugging Face tokenizer.
        prompt: The prompt part of the example (what inference sends); may be empty.
        completion: The answer and its end marker.

    Returns:
        The token ids; the first ones are exactly ``encode_prompt(tokenizer, prompt)``.
    """
    if not prompt:
        return encode_prompt(tokenizer, completion)
    prompt_ids = encode_prompt(tokenizer, prompt)
    whole = encode_prompt(tokenizer, prompt + completion)
    if whole[: len(prompt_ids)] == prompt_ids:
        return whole  # the user's text tokenized as one string, its prompt part exactly the inference ids
    # A merge across the boundary: keep the inference ids and tokenize the answer on its own.
    return prompt_ids + list(tokenizer(completion, add_special_tokens=False)["input_ids"])
