"""The ``chat`` layout: the tokenizer's own chat template, with a fallback for the strict ones.

Some templates reject what a RAG conversation sends (Gemma's rejects a system role, Gemma's and Nemo's
turns that do not alternate) or drop it silently (Phi-3-medium's drops system messages): the conversation
is then rewritten the way the strictest templates take it. The tokens a template writes right after an
answer are where generation must stop.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from llama_unsloth.errors import PromptFormatError
from llama_unsloth.layouts.records import record_value
from llama_unsloth.layouts.templates import ANSWER_SENTINEL
from llama_unsloth.layouts.tokens import tokenizer_special_tokens

Message = Dict[str, str]


def chat_messages(
    system: str,
    instruction: str,
    context: str = "",
    *,
    history: Sequence[Tuple[str, str]] = (),
    answer: Optional[str] = None,
) -> List[Message]:
    """The messages the ``chat`` layout sends: system, earlier turns, the user turn (with context).

    Args:
        system: The system text.
        instruction: The question or instruction.
        context: Retrieved context, written into the user turn before the question.
        history: Earlier conversation turns as ``(role, text)``.
        answer: The assistant's answer (training), or None (inference).
    """
    user = f"Context:\n{context}\n\nQuestion: {instruction}" if context else instruction
    messages = [{"role": "system", "content": system}]
    messages += [{"role": role, "content": content} for role, content in history]
    messages.append({"role": "user", "content": user})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def render_chat(messages: List[Message], tokenizer: Any, generation_prompt: bool) -> str:
    """The conversation rendered by the tokenizer's chat template, rewritten where the template refuses it.

    Args:
        messages: The conversation, as :func:`chat_messages` builds it.
        tokenizer: A tokenizer with a chat template.
        generation_prompt: Whether to end with the assistant's turn header (inference).

    Raises:
        PromptFormatError: The tokenizer has no chat template.
    """
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise PromptFormatError(
            "The 'chat' prompt format needs a tokenizer with a chat template; "
            "pass tokenizer=... or choose another format."
        )
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception:  # jinja2.TemplateError: Gemma's rejects a system role, Gemma's and Nemo's unalternated turns
        return render_alternating(messages, tokenizer, generation_prompt)
    system = messages[0]["content"].strip() if messages and messages[0]["role"] == "system" else ""
    if system and system not in text:
        # Phi-3-medium's template drops system messages silently (Nemo's, when the last turn is the answer).
        return render_alternating(messages, tokenizer, generation_prompt)
    return text


def render_alternating(messages: List[Message], tokenizer: Any, generation_prompt: bool) -> str:
    """The conversation as the strictest templates take it: the system text at the head of the first user
    turn, consecutive turns of one role joined, nothing before the first user turn."""
    merged: List[Message] = []
    pending = [m["content"] for m in messages if m["role"] == "system" and m["content"]]
    for message in messages:
        if message["role"] == "system":
            continue
        if not merged and message["role"] != "user":
            pending.append(message["content"])  # an assistant's greeting before any question
            continue
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1]["content"] += "\n\n" + message["content"]
        else:
            merged.append({"role": message["role"], "content": message["content"]})
    if merged and pending:
        merged[0]["content"] = "\n\n".join([*pending, merged[0]["content"]])
    return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=generation_prompt)


def split_chat_training(record: Mapping[str, Any], system: str, tokenizer: Any) -> Tuple[str, str]:
    """One training example of the ``chat`` layout as ``(prompt, completion)``; the prompt is what inference sends.

    Args:
        record: A dataset record: its instruction, its input (or context) written into the user turn, its answer.
        system: The system text.
        tokenizer: A tokenizer with a chat template.
    """
    instruction = str(record_value(record, "instruction") or "")
    context = str(record_value(record, "input") or record_value(record, "context") or "")
    answer = str(record_value(record, "output") or "")
    prompt = render_chat(chat_messages(system, instruction, context), tokenizer, True)
    full = render_chat(chat_messages(system, instruction, context, answer=answer), tokenizer, False)
    # The chat template closes the turn itself (its end token, often a newline): no EOS is added.
    if full.startswith(prompt):
        return prompt, full[len(prompt) :]
    # A template that renders the earlier turns differently once an answer follows: all of it is trained on.
    return "", full


def chat_turn_end(tokenizer: Any, specials: Sequence[str]) -> Tuple[str, ...]:
    """The special tokens a chat template writes directly after the assistant's answer.

    Args:
        tokenizer: A tokenizer with a chat template.
        specials: The tokenizer's special token texts.
    """
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ANSWER_SENTINEL}]
    try:
        text = render_chat(messages, tokenizer, False)
    except Exception:  # noqa: BLE001 - a template that cannot render an answer has no turn end to read
        return ()
    after = text.split(ANSWER_SENTINEL, 1)[1] if ANSWER_SENTINEL in text else ""
    longest_first = sorted(specials, key=len, reverse=True)
    found: List[str] = []
    while after:
        token = next((t for t in longest_first if t and after.startswith(t)), None)
        if token is None:
            break
        found.append(token)
        after = after[len(token) :]
    return tuple(found)


def turn_end_tokens(tokenizer: Any, stop: Optional[Sequence[str]] = None) -> List[str]:
    """The special token(s) that end the assistant's turn (what generation must stop at).

    Args:
        tokenizer: The model's tokenizer.
        stop: A template layout's stop strings: those that are special tokens end its turn. None for the
            ``chat`` layout, whose turn end is read from the tokenizer's template: the special tokens it
            writes right after an answer (``<|eot_id|>``, ``<end_of_turn>``, ``<|end|>``, ``<|im_end|>``,
            Mistral's ``</s>``), which need not be the tokenizer's EOS.
    """
    specials = tokenizer_special_tokens(tokenizer)
    if stop is not None:
        return [s for s in stop if s in specials]
    return list(chat_turn_end(tokenizer, tuple(sorted(specials))))
