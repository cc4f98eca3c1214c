"""``LayoutLLM``: the LlamaIndex surface both our LLMs share, whatever generates the tokens.

Whatever part of LlamaIndex calls it (query engines in every response mode, chat engines,
``predict``/``stream``, ``chat``/``complete``, their async forms), the request is rendered in the model's
trained layout (:mod:`llama_unsloth.llms.layout`), checked against the window
(:mod:`llama_unsloth.llms.window`) and the answer is shaped the same way (:mod:`llama_unsloth.llms.response`).
Structured outputs (``structured_predict``, ``as_structured_llm``) come from the base class
:class:`~llama_unsloth.llms.structured.StructuredOutputLLM`: those calls carry the output class's JSON schema,
which each subclass turns into its own guided decoding.
A subclass supplies the tokenizer and two generation methods: :meth:`LayoutLLM._answer_batch` and
:meth:`LayoutLLM._answer_stream`. :class:`~llama_unsloth.llms.unsloth.UnslothLLM` generates in-process;
:class:`~llama_unsloth.llms.served.ServedLLM` on an OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

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
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

from llama_unsloth import defaults
from llama_unsloth.abstention import DEFAULT_ABSTENTION_PATTERNS
from llama_unsloth.layouts import KNOWN_SPECIAL_TOKENS, PromptFormat, encode_prompt
from llama_unsloth.llms.hooks import LayoutHook, weak_tokenizer_fn
from llama_unsloth.llms.layout import LayoutCall, LayoutPrompts, to_async
from llama_unsloth.llms.response import clean_answer, completion, growing_answer, special_token_texts
from llama_unsloth.llms.structured import StructuredOutputLLM
from llama_unsloth.llms.window import check_fits, context_pieces, overflow


class LayoutLLM(StructuredOutputLLM):
    """A LlamaIndex LLM that prompts in the layout the model was fine-tuned on (abstract: see the module docstring)."""

    model_name: Optional[str] = Field(
        default=None,
        description="Hub id or local folder of the model (full model or LoRA adapter). None: $LLAMA_UNSLOTH_MODEL "
        "or the offline default SmolLM2-135M-Instruct.",
    )
    max_seq_length: int = Field(
        default=defaults.MAX_SEQ_LENGTH, gt=0, description="Context window: prompt plus new tokens."
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
        default_factory=dict, description="Extra keyword arguments for generation (e.g. repetition_penalty)."
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

    _tokenizer: Any = PrivateAttr(default=None)
    _backend: str = PrivateAttr(default="")
    _format: PromptFormat = PrivateAttr()
    _resolved_name: str = PrivateAttr(default="")
    _stop_token_ids: List[int] = PrivateAttr(default_factory=list)
    # Derived once from the tokenizer: answers are cleaned on every streamed token.
    _end_token_texts: List[str] = PrivateAttr(default_factory=list)
    _special_texts: List[str] = PrivateAttr(default_factory=list)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._format = PromptFormat.get(self.prompt_format)

    def _adopt_tokenizer(self, tokenizer: Any, end_ids: Sequence[Any] = ()) -> None:
        """Takes the tokenizer: the ids and texts that end an answer, LlamaIndex's hooks, the global tokenizer.

        Args:
            tokenizer: The model's tokenizer.
            end_ids: More ids (or lists of ids) that end generation, e.g. the model's generation config EOS.
        """
        self._tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        ids: List[int] = []
        for value in (tokenizer.eos_token_id, *end_ids):
            if isinstance(value, int):
                ids.append(value)
            elif isinstance(value, (list, tuple)):
                ids.extend(v for v in value if isinstance(v, int))
        # The layout's turn end (Gemma's <end_of_turn>, Llama-3's <|eot_id|>, Phi-3's <|end|> in the chat layout)
        # is what a fine-tune learnt to write after its answer; the tokenizer's EOS often is another token.
        ids.extend(tokenizer.convert_tokens_to_ids(self._format.turn_end_tokens(tokenizer)))
        self._stop_token_ids = sorted(set(ids))
        self._end_token_texts = [t for t in tokenizer.convert_ids_to_tokens(self._stop_token_ids) if t]
        self._special_texts = special_token_texts(tokenizer, KNOWN_SPECIAL_TOKENS)
        # LlamaIndex's own hooks (CustomLLM.chat, ChatPromptTemplate.format, ...) render in the layout too.
        self.messages_to_prompt = LayoutHook(self, "messages_to_prompt_text")
        self.completion_to_prompt = LayoutHook(self, "completion_to_prompt_text")
        if self.set_global_tokenizer:
            from llama_index.core import Settings

            Settings.tokenizer = weak_tokenizer_fn(tokenizer)

    # ------------------------------------------------------------------ what a subclass generates with
    def _answer_batch(
        self, texts: List[str], encoded: List[List[int]], gen_kwargs: Dict[str, Any], batch_size: int
    ) -> List[CompletionResponse]:
        """Answers ready prompts (their ids as counted, each already checked against the window)."""
        raise NotImplementedError

    def _answer_stream(self, text: str, ids: List[int], gen_kwargs: Dict[str, Any]) -> Iterator[CompletionResponse]:
        """Streams the answer to one ready prompt (growing ``text``, ``delta``; the last one cleaned, with raw)."""
        raise NotImplementedError

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
    def tokenizer(self) -> Any:
        """The model's tokenizer (renders chat layouts and counts tokens)."""
        return self._tokenizer

    @property
    def backend_name(self) -> str:
        """What generates: ``unsloth``, ``transformers`` or ``fast-decode`` in-process; ``served`` on a server."""
        return self._backend

    @property
    def format(self) -> PromptFormat:
        """The prompt layout in use."""
        return self._format

    def tokenizer_fn(self, text: str) -> List[int]:
        """Token ids of ``text`` with the model's tokenizer (for LlamaIndex's token counting)."""
        return self._tokenizer.encode(text, add_special_tokens=False)

    def prompt_token_ids(self, prompt: str) -> List[int]:
        """The ids a ready prompt is fed to the model as (one BOS, whether or not the layout writes it itself)."""
        # The same function tokenizes training prompts.
        return encode_prompt(self._tokenizer, prompt)

    _encode = prompt_token_ids

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes as a prompt."""
        return len(self.prompt_token_ids(text))

    _count_tokens = count_tokens

    # ------------------------------------------------------------------ the layout
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

    def layout(self) -> LayoutPrompts:
        """The layout renderer for this model and its settings."""
        return LayoutPrompts(self._format, self.system_prompt, self.flag, self._tokenizer)

    # LlamaIndex's hooks: CustomLLM.chat, ChatPromptTemplate.format and PromptTemplate.format call these.
    def messages_to_prompt_text(self, messages: Sequence[Any]) -> str:
        """Renders chat messages as one prompt in this model's layout."""
        return self.layout().messages(messages)

    def completion_to_prompt_text(self, text: str) -> str:
        """Puts a plain text (a question, a formatted template) into this model's layout."""
        return self.layout().text(text)

    def _get_prompt(self, prompt: Any, **prompt_args: Any) -> str:
        return self.layout().call(prompt, prompt_args, llm=self).text

    def _extend_prompt(self, formatted_prompt: str) -> str:
        # The system prompt already sits inside the layout; LlamaIndex's default would prepend it again.
        return formatted_prompt

    # ------------------------------------------------------------------ the window
    def fits_window(self, prompt: str) -> bool:
        """Whether ``prompt`` leaves room for ``max_new_tokens`` within ``max_seq_length`` (the model's own count)."""
        return overflow(self.count_tokens(prompt), self.max_new_tokens, self.max_seq_length) <= 0

    def _check_budget(self, n_prompt: int, max_new_tokens: int) -> None:
        check_fits(n_prompt, max_new_tokens, self.max_seq_length)

    def _pieces(self, call: LayoutCall) -> Optional[List[str]]:
        return context_pieces(self, call)

    def _last_prompt(self, prompt: Any, prompt_args: Dict[str, Any]) -> str:
        """The prompt of the (last) call that answers a LlamaIndex request.

        When the context does not fit the window, the pieces before the last are answered here, each call
        refining the previous answer, and the returned prompt refines with the last piece.
        """
        call = self.layout().call(prompt, prompt_args, llm=self)
        pieces = self._pieces(call)
        if pieces is None:
            return call.text
        assert call.render is not None and call.refine is not None  # a call with pieces has both
        text = call.render(pieces[0])
        for piece in pieces[1:]:
            answer = self.complete(text, formatted=True).text
            text = call.refine(answer, piece)
        return text

    # ------------------------------------------------------------------ predict / stream (LlamaIndex's LLM API)
    def predict(self, prompt: Any, **prompt_args: Any) -> str:
        """Like LlamaIndex's ``LLM.predict``, in the model's layout; over-long context is answered piece by piece."""
        from llama_index.core.instrumentation.events.llm import LLMPredictEndEvent, LLMPredictStartEvent
        from llama_index.core.llms.llm import dispatcher

        dispatcher.event(LLMPredictStartEvent(template=prompt, template_args=prompt_args))
        output = self.complete(self._last_prompt(prompt, prompt_args), formatted=True).text
        output = self._parse_output(output)
        dispatcher.event(LLMPredictEndEvent(output=output))
        return output

    def stream(self, prompt: Any, **prompt_args: Any) -> Any:
        """Like LlamaIndex's ``LLM.stream``, in the model's layout (earlier pieces of long context answered first)."""
        from llama_index.core.instrumentation.events.llm import LLMPredictStartEvent
        from llama_index.core.llms.llm import dispatcher, stream_completion_response_to_tokens

        dispatcher.event(LLMPredictStartEvent(template=prompt, template_args=prompt_args))
        text = self._last_prompt(prompt, prompt_args)
        return stream_completion_response_to_tokens(self.stream_complete(text, formatted=True))

    async def apredict(self, prompt: Any, **prompt_args: Any) -> str:
        """Async :meth:`predict` (generation runs in a worker thread)."""
        return await asyncio.to_thread(self.predict, prompt, **prompt_args)

    async def astream(self, prompt: Any, **prompt_args: Any) -> Any:
        """Async :meth:`stream`."""
        tokens = await asyncio.to_thread(self.stream, prompt, **prompt_args)
        return to_async(tokens)

    # ------------------------------------------------------------------ complete
    def _prepare(self, prompt: str, formatted: bool) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("The prompt is empty: pass a non-empty question or instruction.")
        return prompt if formatted else self.completion_to_prompt_text(prompt)

    def complete_batch(
        self, prompts: Sequence[str], batch_size: int = 8, formatted: bool = False, **kwargs: Any
    ) -> List[CompletionResponse]:
        """Answers many prompts; every prompt is checked against the window before any is generated.

        In-process, prompts go through ``generate`` in left-padded batches (under greedy decoding the answers
        equal those of one-by-one ``complete`` calls); a server gets one request each.

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
        return self._answer_batch(texts, encoded, gen_kwargs, batch_size)

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
        return self._answer_stream(text, ids, gen_kwargs)

    # ------------------------------------------------------------------ chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answers a conversation in the model's layout (the tokenizer's chat template for ``chat``)."""
        return self._chat(messages, **kwargs)

    def _chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        answer = self._complete(self.messages_to_prompt_text(messages), formatted=True, **kwargs)
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=answer.text),
            raw=answer.raw,
            additional_kwargs=answer.additional_kwargs,
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

    # ------------------------------------------------------------------ generation settings and answers
    def _stop_strings(self) -> List[str]:
        return [s for s in [*self.stop, *self._format.stop] if s]

    def _generation_kwargs(self, overrides: Dict[str, Any]) -> Dict[str, Any]:
        """Generation settings of one call: the fields, ``generate_kwargs``, then the call's overrides."""
        overrides = dict(overrides)
        max_new_tokens = int(overrides.pop("max_new_tokens", self.max_new_tokens))
        temperature = float(overrides.pop("temperature", self.temperature))
        top_p = float(overrides.pop("top_p", self.top_p))
        kwargs: Dict[str, Any] = {"max_new_tokens": max_new_tokens}
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
        """Cleans generated text into (answer, reasoning) (see :func:`llama_unsloth.llms.response.clean_answer`)."""
        markers = [*self._stop_strings(), *self._end_token_texts]
        return clean_answer(generated, markers, self._special_texts, self._format, final)

    def _response(self, prompt: str, generated: str, n_prompt: int, n_new: int, seconds: float) -> CompletionResponse:
        answer, reasoning = self._postprocess(generated)
        return completion(prompt, generated, answer, reasoning, (n_prompt, n_new), seconds, self.abstention_patterns)

    def _growing_answer(self, pieces: Any, state: Dict[str, str]) -> Iterator[CompletionResponse]:
        """The answer so far as pieces of generated text arrive (``state`` keeps the text and what was shown)."""
        return growing_answer(pieces, state, self._postprocess, self._format.answer_marker)

    def _final_streamed(self, text: str, state: Dict[str, str], n_prompt: int, seconds: float) -> CompletionResponse:
        """The last streamed response: the cleaned answer, its raw data, and the part not yet shown."""
        generated, shown = state["generated"], state["shown"]
        n_new = len(self._tokenizer.encode(generated, add_special_tokens=False))
        final = self._response(text, generated, n_prompt, n_new, seconds)
        final.delta = final.text[len(shown) :] if final.text.startswith(shown) else ""
        return final


__all__ = ["LayoutLLM"]
