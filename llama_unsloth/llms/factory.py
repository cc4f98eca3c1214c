"""Which LLM a command gets: a fine-tuned folder (with its layout) or a model name, in-process or served."""

from __future__ import annotations

from typing import Any, Optional

from llama_unsloth.defaults import default_model_name
from llama_unsloth.import_utils import cuda_available
from llama_unsloth.llms.served import ServedLLM
from llama_unsloth.llms.unsloth import UnslothLLM


def load_llm(
    model: Optional[str] = None,
    model_dir: Optional[str] = None,
    load_in_4bit: Optional[bool] = None,
    **kwargs: Any,
) -> Any:
    """Loads an ``UnslothLLM``: a fine-tuned folder (with its saved layout) or a model name.

    Args:
        model: Hub name or folder; ``None``: the offline default SmolLM2 (chat layout).
        model_dir: Folder written by the finetune recipe (``prompt_format.json`` inside); wins over ``model``.
        load_in_4bit: ``None``: 4-bit only where CUDA is available (no CPU warning).
        **kwargs: Other ``UnslothLLM`` fields (``max_new_tokens``, ``prompt_format`` ...); ``None`` values are dropped.
            ``llm_url`` (an OpenAI-compatible server, e.g. ``vllm serve``) and ``served_model`` (its model name)
            give a :class:`~llama_unsloth.llms.served.ServedLLM` instead.
    """
    llm_url = kwargs.pop("llm_url", None)
    served_model = kwargs.pop("served_model", None)
    if llm_url:
        # Generation on an OpenAI-compatible server (vllm serve); only the tokenizer loads here.
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if model_dir:
            return ServedLLM.from_finetuned(model_dir, api_base=llm_url, model=served_model, **kwargs)
        name = model or default_model_name()
        return ServedLLM(model_name=name, api_base=llm_url, served_model=served_model or name, **kwargs)
    if load_in_4bit is None:
        load_in_4bit = cuda_available()
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if model_dir:
        return UnslothLLM.from_finetuned(model_dir, load_in_4bit=load_in_4bit, **kwargs)
    return UnslothLLM(model_name=model, load_in_4bit=load_in_4bit, **kwargs)
