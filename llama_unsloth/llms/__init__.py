"""The LlamaIndex LLMs: ``UnslothLLM`` (in-process) and ``ServedLLM`` (on a server), siblings over ``LayoutLLM``.

Other packages import these names from here, never from the modules inside (which may move).
"""

from llama_unsloth.llms.base import LayoutLLM
from llama_unsloth.llms.factory import load_llm
from llama_unsloth.llms.served import ServedLLM
from llama_unsloth.llms.unsloth import UnslothLLM
from llama_unsloth.llms.window import MIN_CONTEXT_TOKENS, check_question_fits, check_window_settings, prompt_helper

__all__ = [
    "MIN_CONTEXT_TOKENS",
    "LayoutLLM",
    "ServedLLM",
    "UnslothLLM",
    "check_question_fits",
    "check_window_settings",
    "load_llm",
    "prompt_helper",
]
