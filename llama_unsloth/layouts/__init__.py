"""The prompt layout a model was fine-tuned on: built-in layouts, users' templates, rendering, training split, tokens.

Other packages import these names from here, never from the modules inside (which may move).
"""

from llama_unsloth.errors import PromptFormatError
from llama_unsloth.layouts.chat_template import (
    BASE_CHAT_TEMPLATE_FILE,
    CHAT_TEMPLATE_FILE,
    CONTEXT_ROLE,
    write_chat_template,
)
from llama_unsloth.layouts.format import BUILTIN_FORMATS, FORMAT_FILE, PromptFormat
from llama_unsloth.layouts.llamaindex import (
    CONDENSE_INSTRUCTION,
    LAYOUT_METADATA_KEY,
    REFINE_INSTRUCTION,
    SUMMARY_INSTRUCTION,
)
from llama_unsloth.layouts.tokens import KNOWN_SPECIAL_TOKENS, encode_prompt, encode_training

__all__ = [
    "BASE_CHAT_TEMPLATE_FILE",
    "BUILTIN_FORMATS",
    "CHAT_TEMPLATE_FILE",
    "CONTEXT_ROLE",
    "CONDENSE_INSTRUCTION",
    "FORMAT_FILE",
    "KNOWN_SPECIAL_TOKENS",
    "LAYOUT_METADATA_KEY",
    "REFINE_INSTRUCTION",
    "SUMMARY_INSTRUCTION",
    "PromptFormat",
    "PromptFormatError",
    "encode_prompt",
    "encode_training",
    "write_chat_template",
]
