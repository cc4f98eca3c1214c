"""``ServedLLM``: the fine-tuned model served by vLLM (or any OpenAI-compatible completions server), in its layout.

Unsloth's maintainers recommend serving a merged model with vLLM rather than using Unsloth as a serving
engine. LlamaIndex's ``OpenAILike`` talks to such a server but knows nothing of the prompt layout the model
was fine-tuned on. ``ServedLLM`` is ``UnslothLLM`` with the generation moved to the server: the same
``PromptFormat`` renders every LlamaIndex surface byte for byte as ``UnslothLLM`` would, the layout's stop
strings are sent with each request, and answers are cleaned the same way. Only the tokenizer is loaded
locally (to render chat templates and count tokens), never the weights.

    vllm serve out/merged --served-model-name my-model --port 8001
    llm = ServedLLM.from_finetuned("out/merged", api_base="http://127.0.0.1:8001/v1", model="my-model")
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Union

from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from llama_unsloth.errors import ServedModelError  # noqa: F401 (defined there, re-exported here)
from llama_unsloth.layouts import PromptFormat
from llama_unsloth.llms.unsloth import UnslothLLM


class _Remote:
    """Stands in for the model object: generation happens on the server (one per ``ServedLLM``)."""

    def __init__(self, api_base: str, model: str) -> None:
        self.api_base, self.model = api_base, model


class ServedLLM(UnslothLLM):
    """A LlamaIndex LLM over an OpenAI-compatible completions endpoint, prompting in the model's trained layout.

    Built on the ``openai`` SDK (``pip install "llama-unsloth[served]"``), which retries connection errors,
    429 and 5xx answers with bounded exponential backoff (``max_retries``).

    Examples:
        ```python
        llm = ServedLLM.from_finetuned("out/merged", api_base="http://127.0.0.1:8001/v1", model="my-model")
        Settings.llm = llm
        index.as_query_engine().query("What limits trade inside the bloc?")   # same prompts as UnslothLLM
        ```
    """

    api_base: str = Field(description="Base URL of the OpenAI-compatible server, e.g. http://127.0.0.1:8001/v1.")
    api_key: str = Field(
        default="EMPTY", description="API key the server expects (vLLM accepts any unless --api-key is set)."
    )
    served_model: str = Field(description="The model name the server serves (vllm serve --served-model-name).")
    request_timeout: float = Field(default=120.0, gt=0, description="Seconds to wait for one answer.")
    max_retries: int = Field(default=3, ge=0, description="Retries of connection errors, 429 and 5xx, with backoff.")

    _client: Any = PrivateAttr(default=None)

    def __init__(self, tokenizer: Any = None, **kwargs: Any) -> None:
        """Wraps a server; ``tokenizer`` (or ``model_name``, a folder holding one) renders and counts prompts.

        Raises:
            ImportError: The ``openai`` package is missing.
        """
        from llama_unsloth.import_utils import require_openai

        require_openai()
        import openai

        if tokenizer is None:
            from transformers import AutoTokenizer

            name = kwargs.get("model_name")
            if not name:
                raise ValueError(
                    "Pass tokenizer=... or model_name=<the model folder> (its tokenizer renders the prompts)."
                )
            tokenizer = AutoTokenizer.from_pretrained(
                str(name), trust_remote_code=bool(kwargs.get("trust_remote_code"))
            )
        kwargs.setdefault("set_global_tokenizer", False)
        remote = _Remote(str(kwargs.get("api_base", "")), str(kwargs.get("served_model", "")))
        super().__init__(model=remote, tokenizer=tokenizer, **kwargs)
        self._backend = "served"
        self._resolved_name = self.served_model
        self._client = openai.OpenAI(
            base_url=self.api_base, api_key=self.api_key, timeout=self.request_timeout, max_retries=self.max_retries
        )

    @classmethod
    def from_finetuned(cls, folder: Union[str, Path], **kwargs: Any) -> ServedLLM:  # type: ignore[override]
        """A served copy of a model folder written by the finetune recipe: its layout and tokenizer come from the folder.

        Args:
            folder: The merged model folder (``prompt_format.json`` and the tokenizer inside).
            **kwargs: ``api_base`` (required), ``model`` or ``served_model`` (default: the folder path, vLLM's
                default name), other fields.
        """
        kwargs.setdefault("prompt_format", PromptFormat.load(folder))
        served = kwargs.pop("model", None) or kwargs.pop("served_model", None) or str(folder)
        return cls(model_name=str(folder), served_model=served, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "ServedLLM"

    # ------------------------------------------------------------------ the server
    def _request(self, text: str, gen_kwargs: Dict[str, Any], stream: bool = False) -> Any:
        import openai

        stops = gen_kwargs.get("stop_strings") or None
        params: Dict[str, Any] = {
            "model": self.served_model,
            "prompt": text,
            "max_tokens": int(gen_kwargs["max_new_tokens"]),
            "temperature": float(gen_kwargs.get("temperature") or 0.0),
            "stop": stops,
            "stream": stream,
        }
        if gen_kwargs.get("do_sample") and gen_kwargs.get("top_p"):
            params["top_p"] = float(gen_kwargs["top_p"])
        try:
            return self._client.completions.create(**params)
        except openai.APIConnectionError as err:
            raise ServedModelError(
                f"Cannot reach the model server at {self.api_base} ({type(err).__name__}). Start it (e.g. `vllm serve "
                f"<model folder> --served-model-name {self.served_model}`) or check api_base."
            ) from None
        except openai.NotFoundError:
            raise ServedModelError(self._wrong_model_message()) from None
        except openai.APIStatusError as err:
            raise ServedModelError(
                f"The model server at {self.api_base} answered {err.status_code}: {err.message}"
            ) from None

    def _wrong_model_message(self) -> str:
        try:
            served = [m.id for m in self._client.models.list()]
        except Exception:  # the listing is only for the message
            served = []
        return (
            f"The server at {self.api_base} does not serve {self.served_model!r}"
            + (f" (it serves {', '.join(repr(s) for s in served)})" if served else "")
            + ": pass model=... with the name given to `vllm serve --served-model-name`."
        )

    def complete_batch(
        self, prompts: Sequence[str], batch_size: int = 8, formatted: bool = False, **kwargs: Any
    ) -> List[CompletionResponse]:
        """Answers prompts one request each (the server batches concurrent requests itself)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        texts = [self._prepare(p, formatted) for p in prompts]
        gen_kwargs = self._generation_kwargs(kwargs)
        responses = []
        for text in texts:
            n_prompt = len(self._encode(text))
            self._check_budget(n_prompt, gen_kwargs["max_new_tokens"])
            began = time.perf_counter()
            result = self._request(text, gen_kwargs)
            generated = result.choices[0].text or ""
            usage = getattr(result, "usage", None)
            n_prompt = getattr(usage, "prompt_tokens", None) or n_prompt
            n_new = getattr(usage, "completion_tokens", None) or len(
                self._tokenizer.encode(generated, add_special_tokens=False)
            )
            responses.append(self._response(text, generated, n_prompt, n_new, time.perf_counter() - began))
        return responses

    def _stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = self._prepare(prompt, formatted)
        gen_kwargs = self._generation_kwargs(kwargs)
        n_prompt = len(self._encode(text))
        self._check_budget(n_prompt, gen_kwargs["max_new_tokens"])
        stream = self._request(text, gen_kwargs, stream=True)
        return self._stream_from(text, n_prompt, stream)

    def _stream_from(self, text: str, n_prompt: int, stream: Iterator[Any]) -> Iterator[CompletionResponse]:
        began = time.perf_counter()
        state = {"generated": "", "shown": ""}
        pieces = ((chunk.choices[0].text or "") if chunk.choices else "" for chunk in stream)
        yield from self._growing_answer(pieces, state)
        yield self._final_streamed(text, state, n_prompt, time.perf_counter() - began)


__all__ = ["ServedLLM", "ServedModelError"]
