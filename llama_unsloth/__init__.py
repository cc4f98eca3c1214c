"""llama-unsloth: Unsloth fine-tuned models as LlamaIndex LLMs, prompted in the layout they were trained on."""

from llama_unsloth.abstention import DEFAULT_ABSTENTION_PATTERNS, is_abstention
from llama_unsloth.layouts import BUILTIN_FORMATS, PromptFormat, PromptFormatError
from llama_unsloth.llms.served import ServedLLM, ServedModelError
from llama_unsloth.llms.unsloth import GenerationOutOfMemoryError, PromptTooLongError, UnslothLLM
from llama_unsloth.models import ModelLoadError

__all__ = [
    "UnslothLLM",
    "ServedLLM",
    "ServedModelError",
    "PromptFormat",
    "PromptFormatError",
    "PromptTooLongError",
    "GenerationOutOfMemoryError",
    "ModelLoadError",
    "BUILTIN_FORMATS",
    "is_abstention",
    "DEFAULT_ABSTENTION_PATTERNS",
]
__version__ = "0.1.0"
