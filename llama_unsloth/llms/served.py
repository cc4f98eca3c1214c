"""``ServedLLM``: the fine-tuned model served by vLLM (or any OpenAI-compatible completions server), in its layout.

Unsloth's maintainers recommend serving a merged model with vLLM rather than using Unsloth as a serving
engine. LlamaIndex's ``OpenAILike`` talks to such a server but knows nothing of the prompt layout the model
was fine-tuned on. ``ServedLLM`` is the sibling of ``UnslothLLM`` (both a :class:`LayoutLLM`) with the
generation on the server: the same ``PromptFormat`` renders every LlamaIndex surface byte for byte as
``UnslothLLM`` would, the layout's stop strings are sent with each request, and answers are cleaned the
same way. Only the tokenizer is loaded locally (to render chat templates and count tokens), never the weights.

    vllm serve out/merged --served-model-name my-model --port 8001
    llm = ServedLLM.from_finetuned("out/merged", api_base="http://127.0.0.1:8001/v1", model="my-model")
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Union

from llama_index.core.base.llms.types import CompletionResponse
from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator, model_validator

from llama_unsloth.errors import ServedModelError  # noqa: F401 (defined there, re-exported here)
from llama_unsloth.import_utils import require_openai
from llama_unsloth.layouts import PromptFormat
from llama_unsloth.llms.base import LayoutLLM
from llama_unsloth.llms.structured import JSON_SCHEMA_KWARG, response_format

# generate_kwargs a completions request can carry: the request parameter (OpenAI's own) or, for the
# sampling extensions vLLM and llama.cpp's server read, the same name in the request body.
REQUEST_PARAMETERS = ("presence_penalty", "frequency_penalty", "seed", "logit_bias", "logprobs", "n", "best_of")
BODY_PARAMETERS = ("repetition_penalty", "top_k", "min_p", "min_tokens", "repeat_penalty")
# Set from the fields on every request (max_tokens, temperature, top_p, stop), and a structured-output call's
# JSON schema (sent as response_format).
_FROM_FIELDS = (
    "max_new_tokens",
    "temperature",
    "top_p",
    "do_sample",
    "stop_strings",
    "pad_token_id",
    "eos_token_id",
    JSON_SCHEMA_KWARG,
)
# UnslothLLM's settings of the weights and of in-process decoding: on a server they are the server's own.
_IN_PROCESS_ONLY = {
    "backend": "the server runs its own engine",
    "load_in_4bit": "quantize on the server (e.g. `vllm serve --quantization bitsandbytes`)",
    "dtype": "set it on the server (e.g. `vllm serve --dtype bfloat16`)",
    "fast_decode": "the server does its own decoding",
    "weights": "quantize on the server",
    "fast_decode_mode": "the server does its own decoding",
    "stream_timeout": "use request_timeout",
}


def unsendable_kwargs(kwargs: Dict[str, Any]) -> List[str]:
    """The generation settings in ``kwargs`` a completions request cannot carry."""
    known = (*REQUEST_PARAMETERS, *BODY_PARAMETERS, *_FROM_FIELDS)
    return [key for key in kwargs if key not in known]


def _unsendable_error(keys: List[str]) -> str:
    return (
        f"generate_kwargs {', '.join(repr(k) for k in keys)} cannot be sent to a model server: a completions "
        f"request takes {', '.join(REQUEST_PARAMETERS + BODY_PARAMETERS)} (besides max_new_tokens, temperature, "
        "top_p and stop). Remove the key, or answer in-process with UnslothLLM."
    )


class ServedLLM(LayoutLLM):
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

    @model_validator(mode="before")
    @classmethod
    def _no_in_process_settings(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, advice in _IN_PROCESS_ONLY.items():
                if key in data:
                    raise ValueError(f"ServedLLM does not take {key}: {advice}.")
        return data

    @field_validator("generate_kwargs")
    @classmethod
    def _sendable(cls, value: Dict[str, Any]) -> Dict[str, Any]:
        keys = unsendable_kwargs(value)
        if keys:
            raise ValueError(_unsendable_error(keys))
        return value

    def __init__(self, tokenizer: Any = None, **kwargs: Any) -> None:
        """Wraps a server; ``tokenizer`` (or ``model_name``, a folder holding one) renders and counts prompts.

        Raises:
            ImportError: The ``openai`` package is missing.
            ValueError: A setting of in-process models (``load_in_4bit``, ``fast_decode`` ...) or a
                ``generate_kwargs`` key a request cannot carry.
        """
        require_openai()
        import openai

        kwargs.setdefault("set_global_tokenizer", False)
        super().__init__(**kwargs)
        if tokenizer is None:
            tokenizer = self._load_tokenizer()
        self._backend = "served"
        self._resolved_name = self.served_model
        self._adopt_tokenizer(tokenizer)
        self._client = openai.OpenAI(
            base_url=self.api_base, api_key=self.api_key, timeout=self.request_timeout, max_retries=self.max_retries
        )

    def _load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        if not self.model_name:
            raise ValueError(
                "Pass tokenizer=... or model_name=<the model folder> (its tokenizer renders the prompts)."
            )
        return AutoTokenizer.from_pretrained(str(self.model_name), trust_remote_code=self.trust_remote_code)

    @classmethod
    def from_finetuned(cls, folder: Union[str, Path], **kwargs: Any) -> ServedLLM:
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
    def _request_params(self, text: str, gen_kwargs: Dict[str, Any], stream: bool) -> Dict[str, Any]:
        """The completions request for one prompt; a setting it cannot carry is an error naming it."""
        keys = unsendable_kwargs(gen_kwargs)
        if keys:
            raise ValueError(_unsendable_error(keys))
        params: Dict[str, Any] = {
            "model": self.served_model,
            "prompt": text,
            "max_tokens": int(gen_kwargs["max_new_tokens"]),
            "temperature": float(gen_kwargs.get("temperature") or 0.0),
            "stop": gen_kwargs.get("stop_strings") or None,
            "stream": stream,
        }
        if gen_kwargs.get("do_sample") and gen_kwargs.get("top_p"):
            params["top_p"] = float(gen_kwargs["top_p"])
        params.update({k: gen_kwargs[k] for k in REQUEST_PARAMETERS if gen_kwargs.get(k) is not None})
        body = {k: gen_kwargs[k] for k in BODY_PARAMETERS if gen_kwargs.get(k) is not None}
        if gen_kwargs.get(JSON_SCHEMA_KWARG) is not None:
            # The SDK's completions.create has no response_format parameter (only chat has): the body carries it,
            # which vLLM and llama.cpp's server read on /v1/completions and decode with their own guided decoding.
            body["response_format"] = response_format(gen_kwargs[JSON_SCHEMA_KWARG])
        if body:
            params["extra_body"] = body
        return params

    def _request(self, text: str, gen_kwargs: Dict[str, Any], stream: bool = False) -> Any:
        import openai

        params = self._request_params(text, gen_kwargs, stream)
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

    # ------------------------------------------------------------------ answers
    def _answer_batch(
        self, texts: List[str], encoded: List[List[int]], gen_kwargs: Dict[str, Any], batch_size: int
    ) -> List[CompletionResponse]:
        # One request each: the server batches concurrent requests itself.
        responses = []
        for text, ids in zip(texts, encoded):
            began = time.perf_counter()
            result = self._request(text, gen_kwargs)
            generated = result.choices[0].text or ""
            usage = getattr(result, "usage", None)
            n_prompt = int(getattr(usage, "prompt_tokens", None) or len(ids))
            n_new = getattr(usage, "completion_tokens", None) or len(
                self._tokenizer.encode(generated, add_special_tokens=False)
            )
            responses.append(self._response(text, generated, n_prompt, n_new, time.perf_counter() - began))
        return responses

    def _answer_stream(self, text: str, ids: List[int], gen_kwargs: Dict[str, Any]) -> Iterator[CompletionResponse]:
        # The request goes out now, not at the first next(): an unreachable server fails the call itself.
        stream = self._request(text, gen_kwargs, stream=True)
        return self._stream_from(text, len(ids), stream)

    def _stream_from(self, text: str, n_prompt: int, stream: Iterator[Any]) -> Iterator[CompletionResponse]:
        began = time.perf_counter()
        state = {"generated": "", "shown": ""}
        pieces = ((chunk.choices[0].text or "") if chunk.choices else "" for chunk in stream)
        yield from self._growing_answer(pieces, state)
        yield self._final_streamed(text, state, n_prompt, time.perf_counter() - began)


__all__ = ["ServedLLM", "ServedModelError", "unsendable_kwargs"]
