"""The built-in layouts (``alpaca``, ``alpaca-context``, ``instruction-context``, ``reasoning``, ``chat``).

Each is a table row of ``PromptFormat`` field values; :data:`~llama_unsloth.layouts.format.BUILTIN_FORMATS`
turns the rows into layouts. The system texts are the ones our users trained with, verbatim.
"""

from __future__ import annotations

import copy
from typing import Any, Dict

from llama_unsloth.layouts.records import DEFAULT_FLAG

ALPACA_SYSTEM = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request."
)
ALPACA_CONTEXT_SYSTEM = (
    "Below is an instruction that describes a task, paired with context passages retrieved from "
    "documents. Write a response that answers the instruction using the context."
)
INSTRUCTION_CONTEXT_SYSTEM = (
    "You are a knowledgeable analyst who answers questions from the documents you are given. "
    "Answer the instruction using only the context below. If the answer is not in it, "
    'say "I don\'t know". Write a complete, well-organised answer of 400-500 words.'
)
# The four system messages our users' Phi-3 reasoning fine-tunes were trained with, verbatim
# (typos, the trailing space after the logician's '". ' and the missing space after "languages." included).
REASONING_SYSTEMS: Dict[str, str] = {
    "logician": (
        'You are an excellent logician and are instructing users on "thinking proce-dures for providing '
        'better quality reasoning to user-provided questions.". '
    ),
    "creator": (
        "You are creator who create amazing content with your free ideas. You attract readers with your "
        "beautiful writing such as novel or advertisement. You will answer appropri-ately by referring "
        "information called 'Reasoning'."
    ),
    "translator": (
        "You are translator who is fluent in multiple languages.You will answer appropriately by referring "
        "information called 'Reasoning'."
    ),
    DEFAULT_FLAG: (
        "You are an AI assistant who is good at providing answers in multiple languages. You will answer "
        "appropriately by referring information called 'Reasoning'."
    ),
}
CHAT_SYSTEM = (
    "You are a helpful assistant. Answer the question using the context when it is given. "
    'If the answer is not in the context, say "I don\'t know".'
)

_ALPACA_TEMPLATE = """{{ system }}

### Instruction:
{{ instruction }}

### Input:
{{ input }}

### Response:
{{ output }}"""

# Our users keep the ``### Input:`` section even when the input is empty.
_ALPACA_CONTEXT_TEMPLATE = """{{ system }}

### Instruction:
{{ instruction }}

### Input:
{{ input }}

### Context:
{{ context }}

### Response:
{{ output }}"""

_INSTRUCTION_CONTEXT_TEMPLATE = """{{ system }}

### INSTRUCTION:
{{ str_instruction }}

### CONTEXT:
{{ str_context }}

### RESPONSE:
{{ str_answer }}"""

_REASONING_TEMPLATE = """<s>{{ system }}
<|instruction|>{{ instruction }}
<|context|>{{ input }}
<|reasoning|>{{ reasoning }}
<|response|>{{ output }}<|endoftext|>"""

#: ``PromptFormat`` field values of each built-in layout, by name (fields not given keep their defaults).
BUILTIN_LAYOUTS: Dict[str, Dict[str, Any]] = {
    "alpaca": {
        "template": _ALPACA_TEMPLATE,
        "system": ALPACA_SYSTEM,
        # A section header in the output means the model started a new turn: the answer ended before it.
        "stop": ["### Instruction:", "### Input:", "### Response:"],
        "record_fields": ["instruction", "input", "output"],
    },
    "alpaca-context": {
        "template": _ALPACA_CONTEXT_TEMPLATE,
        "context_var": "context",
        "input_var": "input",
        "system": ALPACA_CONTEXT_SYSTEM,
        "stop": ["### Instruction:", "### Input:", "### Context:", "### Response:"],
        "record_fields": ["instruction", "context", "output", "input"],
        "optional_fields": ["input"],
    },
    "instruction-context": {
        "template": _INSTRUCTION_CONTEXT_TEMPLATE,
        "query_var": "str_instruction",
        "context_var": "str_context",
        "answer_var": "str_answer",
        "system": INSTRUCTION_CONTEXT_SYSTEM,
        "stop": ["### INSTRUCTION:", "### CONTEXT:", "### RESPONSE:"],
        "record_fields": ["str_instruction", "str_context", "str_answer"],
    },
    "reasoning": {
        "template": _REASONING_TEMPLATE,
        "answer_var": "reasoning",
        "output_var": "output",
        "flag_var": "flag",
        "systems_by_flag": REASONING_SYSTEMS,
        "answer_marker": "<|response|>",
        "append_eos": False,
        "stop": ["<|endoftext|>", "<|instruction|>", "<|context|>"],
        "record_fields": ["instruction", "input", "reasoning", "output", "flag"],
        "optional_fields": ["flag"],
    },
    # No template: the tokenizer's own chat template is the layout.
    "chat": {
        "template": "",
        "system": CHAT_SYSTEM,
        "record_fields": ["instruction", "input", "output"],
    },
}


def builtin_layout(name: str) -> Dict[str, Any]:
    """The ``PromptFormat`` keyword arguments of a built-in layout, a fresh copy for each call.

    Args:
        name: A key of :data:`BUILTIN_LAYOUTS`.

    Raises:
        KeyError: Not a built-in layout.
    """
    # Layouts are mutable dataclasses: a caller changing its stop list must not change the next one's.
    return {"name": name, **copy.deepcopy(BUILTIN_LAYOUTS[name])}
