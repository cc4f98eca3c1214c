"""The prompt layout a model was fine-tuned on: built-in layouts, users' templates, rendering, training split, tokens.

Other packages import these names from here, never from the modules inside (which may move).
"""

from llama_unsloth.errors import PromptFormatError
from llama_unsloth.layouts.format import (
    BUILTIN_FORMATS,
    CONDENSE_INSTRUCTION,
    FORMAT_FILE,
    LAYOUT_METADATA_KEY,
    REFINE_INSTRUCTION,
    SUMMARY_INSTRUCTION,
    PromptFormat,
    encode_prompt,
    encode_training,
)

__all__ = [
    "BUILTIN_FORMATS",
    "CONDENSE_INSTRUCTION",
    "FORMAT_FILE",
    "LAYOUT_METADATA_KEY",
    "REFINE_INSTRUCTION",
    "SUMMARY_INSTRUCTION",
    "PromptFormat",
    "PromptFormatError",
    "encode_prompt",
    "encode_training",
]
