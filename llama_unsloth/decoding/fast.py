"""Fast batch-1 (and small-batch) decoding: a static KV cache in length buckets, CUDA graphs, torchao weights.

Where the time goes at batch 1 is per-token launch overhead, not the GPU (issue 13): ``model.generate`` with
a dynamic cache launches hundreds of small kernels per token from Python. This module decodes with

* a transformers ``StaticCache`` per *bucket*: the cache length is the smallest power of two (at least
  ``MIN_BUCKET``) holding prompt + ``max_new_tokens``, capped at ``max_seq_length``. Prompts of any length
  reuse one graph per (batch bucket, length bucket); batch sizes are rounded up to powers of two;
* one CUDA graph per bucket of the per-token step (the model forward on one token, its attention mask and
  the position bump). ``mode="compile"`` runs that step through ``torch.compile`` (inductor, fused kernels)
  before capture; ``mode="graphs"`` captures the eager step (warm-up in about a second, no compile);
  ``mode="eager"`` runs the same static-cache loop with neither (CPU; what CI tests);
* weights ``bf16`` (the merged 16-bit model), or torchao ``int8`` / ``int4`` weight-only (int4 in the
  tile-packed tinygemm format, group 128; ``lm_head`` stays 16-bit);
* int4 prompts (32 rows or more) multiply each weight unpacked to a temporary bf16 matrix
  (:mod:`llama_unsloth.decoding.tinygemm`): tinygemm, built for a few rows, took 10x the bf16 time on a 563-token prompt;
* attention of the one new token through :func:`grouped_decode_attention`, registered in transformers'
  ``AttentionInterface``: the query heads of each key/value head attend to that head's cache directly,
  where transformers' SDPA path first copies every key/value head ``num_attention_heads / num_key_value_heads``
  times (it must, with a mask): at a 1024-token cache that copy was ~1 GB of memory traffic per token at 8B.

The decode loop mirrors ``generate``: greedy or sampling (temperature, top-k, top-p), ``min_new_tokens``,
EOS ids, ``stopping_criteria`` (our stop strings), a ``streamer``, and rows that finished emit the pad
token. One step is queued on the GPU before the host checks the previous token, so the host checks cost no
GPU time.

Unsloth patches transformers' model classes in place (their ``forward`` methods, and replaces some classes
in the modeling modules) once ``FastLanguageModel`` has loaded a model in the process. The fast path never
runs that code: :func:`load_fast_model` builds the model from a *fresh copy* of transformers' modeling
module (executed again from transformers' own file, so every class and function in it is the original)
whenever the registered module shows any sign of patching, or unsloth is imported, and
:func:`foreign_forwards` then checks that every submodule's ``forward`` is code from transformers or torch.

Nothing here raises at question time: where the path cannot run (no CUDA, a GPU or architecture the
kernels do not support, torchao missing, compile or capture failing, a ``generate`` option the loop does
not implement) :class:`FastDecoder` says why in one warning and the caller answers through
``model.generate`` as before.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from llama_unsloth.errors import FastDecodeUnavailable
from llama_unsloth.once import warn_once

logger = logging.getLogger(__name__)

WEIGHTS = ("bf16", "int8", "int4")
MODES = ("compile", "graphs", "eager")
MIN_BUCKET = 256
INT4_GROUP_SIZE = 128
DECODE_ATTENTION = "llama_unsloth_grouped_decode"
# Inductor options for the compiled step, as in gpt-fast and torchao's generate.py: coordinate-descent tuning
# of each fused kernel's launch settings pays at batch 1, where every kernel is small. Passed per compile, so
# the user's own torch.compile calls keep their settings.
COMPILE_OPTIONS: Dict[str, Any] = {"coordinate_descent_tuning": True}

# generate() options the fast loop implements; any other one sends that call to model.generate.
_SUPPORTED_KWARGS = frozenset(
    {
        "max_new_tokens",
        "min_new_tokens",
        "pad_token_id",
        "eos_token_id",
        "do_sample",
        "temperature",
        "top_p",
        "top_k",
        "stopping_criteria",
        "streamer",
        "use_cache",
        "tokenizer",
        "num_beams",
    }
)


def weights_error(value: Any) -> Optional[str]:
    """The message for a bad ``weights`` value, or None when it is fine."""
    if value is None or value in WEIGHTS:
        return None
    return (
        f"Unknown weights={value!r} (UnslothLLM field 'weights'): choose 'bf16' (the merged 16-bit model), "
        "'int8' or 'int4' (torchao weight-only), or leave it None, together with fast_decode=True."
    )


def bucket_for(n_tokens: int, max_seq_length: int, min_bucket: int = MIN_BUCKET) -> int:
    """The cache length for ``n_tokens`` (prompt + new tokens): a power of two, at most ``max_seq_length``."""
    if n_tokens > max_seq_length:
        raise ValueError(f"{n_tokens} tokens do not fit max_seq_length={max_seq_length}.")
    size = min_bucket
    while size < n_tokens:
        size *= 2
    return min(size, max_seq_length)


def buckets(max_seq_length: int, min_bucket: int = MIN_BUCKET) -> List[int]:
    """Every cache length a model with this window can use."""
    sizes, size = [], min_bucket
    while size < max_seq_length:
        sizes.append(size)
        size *= 2
    return sizes + [max_seq_length]


def batch_bucket(batch: int) -> int:
    """Batch sizes are rounded up to a power of two (extra rows are copies whose answers are dropped)."""
    size = 1
    while size < batch:
        size *= 2
    return size


def cuda_reason(weights: Optional[str] = None) -> Optional[str]:
    """Why the compiled/graph path cannot run on this machine, or None."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is available"
    major, minor = torch.cuda.get_device_capability()
    if weights == "int4" and major < 8:
        return f"int4 weights need a GPU of compute capability 8.0 or newer (this one is {major}.{minor})"
    if weights in ("int4", "int8"):
        try:
            import torchao  # noqa: F401
        except Exception as err:  # ImportError, or a torchao built for another torch
            return f"{weights} weights need torchao (pip install torchao): {type(err).__name__}: {err}"
    return None


# ------------------------------------------------------------------------------------------ plain transformers code
def _allowed_roots() -> Tuple[str, ...]:
    import torch
    import transformers

    roots = [str(Path(transformers.__file__).resolve().parent), str(Path(torch.__file__).resolve().parent)]
    try:
        import torchao

        roots.append(str(Path(torchao.__file__).resolve().parent))
    except Exception:
        pass
    return tuple(roots)


def _code_file(function: Any) -> str:
    function = inspect.unwrap(function)
    code = getattr(function, "__code__", None)
    return str(Path(code.co_filename).resolve()) if code is not None else ""


def foreign_forwards(model: Any) -> List[str]:
    """``Class (file)`` for each submodule whose ``forward`` is not transformers'/torch's own code.

    An Unsloth-patched model lists its attention, decoder layers and model classes here; the fast path
    only runs a model for which this is empty.
    """
    roots = _allowed_roots()
    found = []
    seen = set()
    for module in model.modules():
        cls = type(module)
        if cls in seen:
            continue
        seen.add(cls)
        path = _code_file(cls.forward)
        if path and not path.startswith(roots):
            found.append(f"{cls.__name__} ({path})")
    return found


def _modeling_module_name(config: Any) -> str:
    from transformers.models.auto.configuration_auto import model_type_to_module_name

    name = model_type_to_module_name(config.model_type)
    return f"transformers.models.{name}.modeling_{name}"


def _module_is_patched(module: Any) -> bool:
    """True when any class or function in a transformers modeling module is not the one its file defines."""
    own_file = str(Path(module.__file__).resolve())
    roots = _allowed_roots()
    for name, value in vars(module).items():
        if name.startswith("__"):
            continue
        if inspect.isclass(value):
            defined_here = getattr(value, "__module__", "") == module.__name__
            forward_fn = getattr(value, "forward", None)
            outside = _code_file(forward_fn) if inspect.isfunction(forward_fn) else ""
            if not defined_here and outside and not outside.startswith(roots):
                return True  # a class replaced by one from elsewhere (Unsloth's rotary embedding)
            forward = value.__dict__.get("forward")
            if defined_here and forward is not None and _code_file(forward) not in ("", own_file):
                return True  # a method replaced in place (Unsloth's fast forwards)
        elif inspect.isfunction(value) and value.__module__ == module.__name__ and _code_file(value) != own_file:
            return True
    return False


_PRISTINE: Dict[str, Any] = {}


def pristine_modeling_module(config: Any) -> Any:
    """A fresh copy of transformers' modeling module for ``config``, executed again from transformers' file.

    Its classes and functions are the originals even after Unsloth patched the registered module.
    """
    name = _modeling_module_name(config)
    if name in _PRISTINE:
        return _PRISTINE[name]
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        raise FastDecodeUnavailable(f"transformers has no modeling module {name}")
    package, _, leaf = name.rpartition(".")
    fresh_name = f"{package}._llama_unsloth_pristine_{leaf}"
    fresh_spec = importlib.util.spec_from_file_location(fresh_name, spec.origin)
    if fresh_spec is None or fresh_spec.loader is None:
        raise FastDecodeUnavailable(f"cannot load a fresh copy of {spec.origin}")
    module = importlib.util.module_from_spec(fresh_spec)
    sys.modules[fresh_name] = module
    fresh_spec.loader.exec_module(module)
    _PRISTINE[name] = module
    return module


def plain_causal_lm_class(config: Any, force_fresh: bool = False) -> Any:
    """transformers' causal-LM class for ``config``, from a fresh module copy if the registered one looks patched."""
    import importlib

    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    class_name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
    if class_name is None:
        raise FastDecodeUnavailable(f"model type {config.model_type!r} has no transformers causal-LM class")
    registered = importlib.import_module(_modeling_module_name(config))
    if not force_fresh and "unsloth" not in sys.modules and not _module_is_patched(registered):
        return getattr(registered, class_name)
    return getattr(pristine_modeling_module(config), class_name)


# ------------------------------------------------------------------------------------------ attention of one token
def grouped_decode_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    softcap: Optional[float] = None,
    **kwargs: Any,
) -> Tuple[Any, None]:
    """transformers' attention-function signature: attention without copying K/V per query head.

    The query heads sharing a key/value head are one group (``[B, Hkv, G, Q, D]``), so one batched matmul per
    layer reads each cached key and value once. A prompt (more than one query token) goes to transformers'
    ``sdpa_attention_forward`` unchanged, except with ``softcap`` (Gemma-2), which SDPA cannot apply: then
    prompt and answer both take this function, so both are capped, as in transformers' eager path and Unsloth's.

    Returns:
        ``(output [B, Q, H, D], None)``, as transformers' attention functions do.
    """
    import torch

    batch, heads, q_len, dim = query.shape
    if dropout or (q_len != 1 and not softcap):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    kv_heads, length = key.shape[1], key.shape[2]
    scale = scaling if scaling is not None else dim**-0.5
    groups = heads // kv_heads
    # 4-D matmuls, [B, Hkv, G*Q, D] by [B, Hkv, D, L]: a broadcast 5-D matmul would copy K and V per group.
    grouped = query.reshape(batch, kv_heads, groups * q_len, dim)
    scores = torch.matmul(grouped, key.transpose(2, 3)).float() * scale
    scores = scores.view(batch, kv_heads, groups, q_len, length)
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        mask = attention_mask[:, :, -q_len:, :length][:, :, None]  # [B, 1, 1, Q, L]: broadcasts over the groups
    elif q_len > 1:  # transformers leaves out a purely causal mask: the queries are the last q_len positions
        mask = (
            torch.arange(length, device=query.device)
            <= torch.arange(length - q_len, length, device=query.device)[:, None]
        )
    else:
        mask = None
    if mask is not None:
        if mask.dtype == torch.bool:
            # The dtype's minimum, not -inf (as transformers' eager path): a left-padding query row that may see
            # no key gets a finite, ignored softmax instead of NaNs that its cached V would carry onwards.
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask.float()
    probs = torch.softmax(scores, dim=-1).to(value.dtype).view(batch, kv_heads, groups * q_len, length)
    out = torch.matmul(probs, value)  # [B, Hkv, G*Q, D]
    return out.reshape(batch, heads, q_len, dim).transpose(1, 2), None


def use_grouped_decode_attention(model: Any) -> bool:
    """Switches ``model`` to :func:`grouped_decode_attention` (registered once); False where it does not apply.

    It replaces transformers' ``sdpa`` and ``eager`` functions only, on models that use transformers'
    attention interface; another choice of the user's (flash attention, flex) is kept.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    config = model.config
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager", DECODE_ATTENTION):
        return False
    if getattr(model, "_can_set_attn_implementation", lambda: False)() is False:
        return False
    AttentionInterface.register(DECODE_ATTENTION, grouped_decode_attention)
    # generate() (a call the fast loop sends back) builds its masks by implementation name: SDPA's boolean ones.
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)
    model.set_attn_implementation(DECODE_ATTENTION)
    return config._attn_implementation == DECODE_ATTENTION


# ------------------------------------------------------------------------------------------ loading and weights
def fast_dtype() -> Any:
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_fast_model(
    model_name: str, *, dtype: Any = None, trust_remote_code: bool = False, device: Optional[str] = None
) -> Tuple[Any, Any]:
    """``(model, tokenizer)`` in 16-bit with transformers' own classes: a merged model, or an adapter merged in.

    An adapter folder is loaded onto its base, merged (``merge_and_unload``) and, when the base was a
    pre-quantized bitsandbytes checkpoint, dequantized: the fast path always starts from plain 16-bit weights.
    """
    import json

    import torch
    from transformers import AutoConfig, AutoTokenizer

    from llama_unsloth.models import is_adapter_folder

    dtype = dtype or fast_dtype()
    device = device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    adapter = is_adapter_folder(model_name)
    base_name = model_name
    if adapter:
        base_name = json.loads((Path(model_name) / "adapter_config.json").read_text(encoding="utf-8"))[
            "base_model_name_or_path"
        ]
    config = AutoConfig.from_pretrained(base_name, trust_remote_code=trust_remote_code)
    quantized = getattr(config, "quantization_config", None) is not None
    kwargs: Dict[str, Any] = {"dtype": dtype, "device_map": device}
    if trust_remote_code and getattr(config, "auto_map", None):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base_name, trust_remote_code=True, **kwargs)
    else:
        model = plain_causal_lm_class(config).from_pretrained(base_name, **kwargs)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, model_name).merge_and_unload()
    if quantized:
        model = model.dequantize()
        model.to(dtype)
    foreign = foreign_forwards(model)
    if foreign:
        raise FastDecodeUnavailable("the loaded model runs code outside transformers: " + ", ".join(foreign))
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(model_name, trust_remote_code=trust_remote_code)
    return model, tokenizer


def quantize_weights(model: Any, weights: Optional[str]) -> Any:
    """Applies torchao weight-only int8 / int4 (tile-packed, group 128) to every Linear but ``lm_head``, in place."""
    if weights in (None, "bf16"):
        return model
    import torch
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    if weights == "int4":
        config = Int4WeightOnlyConfig(group_size=INT4_GROUP_SIZE, int4_packing_format="tile_packed_to_4d")
    else:
        config = Int8WeightOnlyConfig()

    def keep(module: Any, fqn: str) -> bool:
        # lm_head stays 16-bit: often tied to the embeddings, and the largest quality cost of 4 bits.
        if not isinstance(module, torch.nn.Linear) or fqn.split(".")[-1] == "lm_head":
            return False
        return weights != "int4" or module.in_features % INT4_GROUP_SIZE == 0

    quantize_(model, config, filter_fn=keep)
    return model


# ------------------------------------------------------------------------------------------ the decoder
@dataclass
class _Slot:
    """The static cache, input buffers and captured graph of one (batch bucket, length bucket)."""

    batch: int
    length: int
    cache: Any
    tokens: Any  # [B, 1] the token fed to the next step
    positions: Any  # [B, 1] its position id
    step: Any  # [1] the cache index it is written to
    pad_mask: Any  # [B, L] bool: False on left padding
    kv_index: Any  # [L]
    graph: Any = None
    logits: Any = None  # the captured step's output


@dataclass
class FastDecodeStats:
    """What the fast path did: graphs captured, torch.compile compilations, warm-up and compile seconds."""

    mode: str = ""
    weights: str = ""
    attention: str = ""
    prefill: str = ""
    graphs: int = 0
    compiles: int = 0
    capture_seconds: float = 0.0
    fast_calls: int = 0
    fallback_calls: int = 0
    slots: List[Tuple[int, int]] = field(default_factory=list)
    disabled: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        return {
            "mode": self.mode,
            "weights": self.weights,
            "attention": self.attention,
            "prefill": self.prefill,
            "graphs": self.graphs,
            "compiles": self.compiles,
            "capture_seconds": round(self.capture_seconds, 2),
            "fast_calls": self.fast_calls,
            "fallback_calls": self.fallback_calls,
            "slots": list(self.slots),
            "disabled": self.disabled,
        }


def _sliding_window(config: Any) -> Optional[int]:
    """The attention window of a model with sliding-window layers (Gemma-2, Phi-3, Mistral), or None."""
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0:
        return None
    if getattr(config, "use_sliding_window", True) is False:  # Qwen2-style configs carry a window they don't use
        return None
    return window


def _full_attention_config(config: Any) -> Any:
    """A copy of ``config`` whose every layer is full attention: what StaticCache builds its layers from."""
    import copy

    text = copy.deepcopy(config.get_text_config(decoder=True))
    text.layer_types = ["full_attention"] * int(text.num_hidden_layers)
    return text


def _dynamo_frames() -> int:
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"].get("unique_graphs", 0))  # one per graph dynamo compiled
    except Exception:
        return 0


class FastDecoder:
    """Static-cache decoding of one model, in CUDA graphs per length bucket (``mode`` as in the module doc).

    Args:
        model: A transformers causal LM running transformers' own code (see :func:`foreign_forwards`).
        max_seq_length: The longest prompt + answer; the largest bucket.
        mode: ``compile``, ``graphs`` or ``eager`` (the last runs anywhere, CPU included).
        weights: A label for the stats (the weights are already in place).
        min_bucket: The smallest cache length.
        compile_options: Inductor options for ``mode="compile"`` (default :data:`COMPILE_OPTIONS`).

    Call :meth:`generate` under the model's generation lock (``UnslothLLM`` does).
    """

    def __init__(
        self,
        model: Any,
        max_seq_length: int,
        mode: str = "compile",
        weights: str = "bf16",
        min_bucket: int = MIN_BUCKET,
        compile_options: Optional[Dict[str, Any]] = None,
    ) -> None:
        import torch

        if mode not in MODES:
            raise ValueError(f"Unknown fast decode mode {mode!r}: choose one of {', '.join(MODES)}.")
        self.model = model
        self.max_seq_length = max_seq_length
        self.mode = mode
        self.min_bucket = min(min_bucket, max_seq_length)
        self.device = next(model.parameters()).device
        if mode != "eager" and self.device.type != "cuda":
            raise FastDecodeUnavailable(f"mode={mode!r} needs the model on a CUDA GPU (it is on {self.device.type})")
        foreign = foreign_forwards(model)
        if foreign:
            raise FastDecodeUnavailable(
                "the model runs code outside transformers (an Unsloth-patched model?): " + ", ".join(foreign[:4])
            )
        self.stats = FastDecodeStats(mode=mode, weights=weights)
        self.stats.attention = (
            DECODE_ATTENTION if use_grouped_decode_attention(model) else model.config._attn_implementation
        )
        # Our static-cache mask has no sliding window: calls longer than the model's window take generate(), and
        # no cache is longer than the window, so inside it sliding layers are full-attention layers (same result)
        # and get plain static layers (transformers' sliding ones keep a Python-int length that CUDA graphs freeze).
        self.sliding_window = _sliding_window(model.config)
        if self.sliding_window:
            self.max_seq_length = min(self.max_seq_length, self.sliding_window)
            self.min_bucket = min(self.min_bucket, self.max_seq_length)
        self._cache_config = _full_attention_config(model.config) if self.sliding_window else model.config
        # int4 prompts: tinygemm is slow at hundreds of rows; each weight is unpacked to bf16 for its prompt matmul.
        from llama_unsloth.decoding import tinygemm

        self._prefill_mode = tinygemm.prefill_mode(model, compile=mode == "compile") if weights == "int4" else None
        self.stats.prefill = "int4 unpacked to bf16" if self._prefill_mode is not None else "model weights"
        self._slots: Dict[Tuple[int, int], _Slot] = {}
        self._pool = None
        self._step_fn = self._forward_step
        if mode == "compile":
            try:
                limit = max(int(getattr(torch._dynamo.config, "recompile_limit", 8)), 64)
                torch._dynamo.config.recompile_limit = limit
            except Exception:
                pass
            self._step_fn = torch.compile(
                self._forward_step, fullgraph=True, dynamic=False, options=dict(compile_options or COMPILE_OPTIONS)
            )

    # -------------------------------------------------------------- the step that is compiled / captured
    def _forward_step(self, tokens: Any, positions: Any, mask: Any, cache: Any) -> Any:
        out = self.model(
            input_ids=tokens,
            position_ids=positions,
            attention_mask=mask,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :].float()

    def _decode_step(self, slot: _Slot) -> Any:
        """One token for every row: the attention mask, the forward, and the position bump (all capturable)."""
        mask = (slot.kv_index[None, :] <= slot.step) & slot.pad_mask
        logits = self._step_fn(slot.tokens, slot.positions, mask[:, None, None, :], slot.cache)
        slot.step.add_(1)
        slot.positions.add_(1)
        return logits

    # -------------------------------------------------------------- slots and graphs
    def _slot(self, batch: int, length: int) -> _Slot:
        key = (batch, length)
        slot = self._slots.get(key)
        if slot is not None:
            return slot
        import torch
        from transformers import StaticCache

        dev = self.device
        cache = StaticCache(config=self._cache_config, max_cache_len=length)
        with torch.inference_mode():
            slot = self._new_slot(batch, length, cache, dev)
        return self._ready(key, slot)

    def _new_slot(self, batch: int, length: int, cache: Any, dev: Any) -> _Slot:
        import torch

        return _Slot(
            batch=batch,
            length=length,
            cache=cache,
            tokens=torch.zeros((batch, 1), dtype=torch.long, device=dev),
            positions=torch.zeros((batch, 1), dtype=torch.long, device=dev),
            step=torch.zeros((1,), dtype=torch.long, device=dev),
            pad_mask=torch.ones((batch, length), dtype=torch.bool, device=dev),
            kv_index=torch.arange(length, device=dev),
        )

    def _ready(self, key: Tuple[int, int], slot: _Slot) -> _Slot:
        import torch

        batch = key[0]
        dev = self.device
        began = time.perf_counter()
        frames = _dynamo_frames()
        try:
            with torch.inference_mode():
                # A prefill of one token allocates the cache tensors (outside any graph: their addresses stay fixed).
                one = torch.zeros((batch, 1), dtype=torch.long, device=dev)
                self._prefill(slot, one, torch.ones_like(one))
                if self.mode != "eager":
                    self._capture(slot)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as err:  # compile or capture failed: the caller falls back to generate()
            raise FastDecodeUnavailable(
                f"building the {self.mode} decode step for batch {batch}, cache {key[1]} failed: {type(err).__name__}: {err}"
            ) from err
        self.stats.compiles += _dynamo_frames() - frames
        self.stats.capture_seconds += time.perf_counter() - began
        self._slots[key] = slot
        self.stats.slots.append(key)
        return slot

    def _capture(self, slot: _Slot) -> None:
        import torch

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # compiles (mode=compile), autotunes, and settles the allocator
                self._decode_step(slot)
        torch.cuda.current_stream().wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            slot.logits = self._decode_step(slot)
        slot.graph = graph
        self.stats.graphs += 1
        torch.cuda.synchronize()

    def _prefill(self, slot: _Slot, ids: Any, pad_mask_prompt: Any) -> Any:
        """Resets the slot's cache and runs the prompt (eager); returns the last position's logits."""
        import torch

        slot.cache.reset()
        width = ids.shape[1]
        slot.pad_mask.fill_(True)
        slot.pad_mask[:, :width] = pad_mask_prompt.to(torch.bool)
        positions = pad_mask_prompt.long().cumsum(-1) - 1
        positions = positions.masked_fill(pad_mask_prompt == 0, 0)
        causal = slot.kv_index[None, :] <= torch.arange(width, device=self.device)[:, None]  # [W, L]
        mask = causal[None, None, :, :] & slot.pad_mask[:, None, None, :]
        with self._prefill_mode or contextlib.nullcontext():
            logits = self._forward_step(ids, positions, mask, slot.cache)
        slot.step.fill_(width)
        slot.positions.copy_(positions[:, -1:] + 1)
        return logits

    # -------------------------------------------------------------- public
    def unsupported(self, kwargs: Dict[str, Any], prompt_tokens: int = 0) -> Optional[str]:
        """Why this ``generate`` call (of ``prompt_tokens`` prompt tokens) must go to ``model.generate``, or None."""
        extra = sorted(k for k, v in kwargs.items() if k not in _SUPPORTED_KWARGS and v is not None)
        if extra:
            return "generate option(s) " + ", ".join(extra) + " are not implemented by the fast decode loop"
        if int(kwargs.get("num_beams") or 1) > 1:
            return "beam search is not implemented by the fast decode loop"
        total = prompt_tokens + int(kwargs.get("max_new_tokens") or 20)
        if self.sliding_window and total > self.max_seq_length:
            return (
                f"prompt + max_new_tokens ({total}) exceed the model's sliding attention window "
                f"({self.sliding_window}), which the fast decode loop's mask does not implement"
            )
        return None

    def warm_up(
        self, prompt_tokens: Optional[Sequence[int]] = None, batch_sizes: Sequence[int] = (1,), max_new_tokens: int = 0
    ) -> Dict[str, Any]:
        """Builds (compiles, captures) the graphs now; by default every length bucket at batch 1."""
        lengths = (
            sorted(
                {
                    bucket_for(n + max_new_tokens, self.max_seq_length, self.min_bucket)
                    for n in prompt_tokens
                    if n + max_new_tokens <= self.max_seq_length  # longer calls take generate(): nothing to build
                }
            )
            if prompt_tokens
            else buckets(self.max_seq_length, self.min_bucket)
        )
        began = time.perf_counter()
        for batch in batch_sizes:
            for length in lengths:
                self._slot(batch_bucket(batch), length)
        result = self.stats.as_dict()
        result["warm_up_seconds"] = round(time.perf_counter() - began, 2)
        return result

    def generate(self, input_ids: Any, attention_mask: Any, kwargs: Dict[str, Any]) -> Any:
        """Like ``model.generate(input_ids=..., attention_mask=..., **kwargs)``: prompt + new ids, on the CPU."""
        import torch

        kwargs = dict(kwargs)
        batch, width = input_ids.shape
        max_new = int(kwargs.get("max_new_tokens") or 20)
        min_new = int(kwargs.get("min_new_tokens") or 0)
        pad_id = kwargs.get("pad_token_id")
        eos = kwargs.get("eos_token_id")
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        pad_id = pad_id if pad_id is not None else (eos_ids[0] if eos_ids else 0)
        criteria = kwargs.get("stopping_criteria") or []
        streamer = kwargs.get("streamer")
        sample = bool(kwargs.get("do_sample"))
        temperature = float(kwargs.get("temperature") or 1.0)
        top_p = kwargs.get("top_p")
        top_k = (
            kwargs.get("top_k", getattr(getattr(self.model, "generation_config", None), "top_k", None))
            if sample
            else None
        )

        rows = batch_bucket(batch)
        length = bucket_for(width + max_new, self.max_seq_length, self.min_bucket)
        slot = self._slot(rows, length)
        dev = self.device
        ids = input_ids.to(dev)
        mask = attention_mask.to(dev) if attention_mask is not None else torch.ones_like(ids)
        if rows > batch:  # filler rows: copies of the first row, finished from the start
            ids = torch.cat([ids, ids[:1].expand(rows - batch, -1)])
            mask = torch.cat([mask, mask[:1].expand(rows - batch, -1)])
        out = torch.full((batch, width + max_new), pad_id, dtype=torch.long)
        out[:, :width] = input_ids.cpu()
        finished = torch.zeros(rows, dtype=torch.bool)
        finished[batch:] = True
        finished_dev = finished.to(dev)
        eos_dev = torch.tensor(eos_ids, dtype=torch.long, device=dev) if eos_ids else None
        on_cuda = dev.type == "cuda"
        host = torch.empty((rows,), dtype=torch.long, pin_memory=on_cuda)
        copied: Any = torch.cuda.Event() if on_cuda else None
        self.stats.fast_calls += 1
        if streamer is not None:
            streamer.put(input_ids.cpu())

        def pick(logits: Any, index: int) -> Any:
            scores = logits
            if index < min_new and eos_dev is not None:
                scores = scores.clone()
                scores[:, eos_dev] = float("-inf")
            if sample:
                scores = _warp(scores, temperature, top_k, top_p)
                token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            else:
                token = scores.argmax(dim=-1)
            return torch.where(finished_dev, torch.full_like(token, pad_id), token)

        n_new = 0
        with torch.inference_mode():
            token = pick(self._prefill(slot, ids, mask), 0)
            for index in range(max_new):
                slot.tokens.copy_(token[:, None])
                host.copy_(token, non_blocking=on_cuda)
                if on_cuda:
                    copied.record()
                more = index + 1 < max_new
                if more:  # queue the next step before the host looks at this token
                    if slot.graph is not None:
                        slot.graph.replay()
                        logits = slot.logits
                    else:
                        logits = self._decode_step(slot)
                if on_cuda:
                    copied.synchronize()
                new = host[:batch].clone()
                out[:, width + index] = new
                n_new = index + 1
                if streamer is not None:
                    streamer.put(new)
                done = finished.clone()
                if eos_ids:
                    done[:batch] |= torch.isin(new, torch.tensor(eos_ids))
                for criterion in criteria:
                    done[:batch] |= criterion(out[:, : width + n_new], None).to(torch.bool).cpu()
                if done.all() or not more:
                    break
                if not torch.equal(done, finished):
                    finished = done
                    finished_dev.copy_(finished.to(dev))
                token = pick(logits, index + 1)
        if on_cuda:
            torch.cuda.current_stream().synchronize()
        if streamer is not None:
            streamer.end()
        return out[:, : width + n_new]


def _warp(scores: Any, temperature: float, top_k: Optional[int], top_p: Optional[float]) -> Any:
    """generate()'s temperature, top-k and top-p logits warpers, in that order."""
    import torch

    scores = scores / max(temperature, 1e-5)
    if top_k:
        k = min(int(top_k), scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[..., -1, None]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False, dim=-1)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - top_p)
        remove_sorted[..., -1:] = False
        remove = remove_sorted.scatter(1, order, remove_sorted)
        scores = scores.masked_fill(remove, float("-inf"))
    return scores


__all__ = [
    "WEIGHTS",
    "MODES",
    "COMPILE_OPTIONS",
    "DECODE_ATTENTION",
    "FastDecoder",
    "FastDecodeStats",
    "FastDecodeUnavailable",
    "bucket_for",
    "buckets",
    "batch_bucket",
    "cuda_reason",
    "foreign_forwards",
    "grouped_decode_attention",
    "load_fast_model",
    "plain_causal_lm_class",
    "pristine_modeling_module",
    "quantize_weights",
    "use_grouped_decode_attention",
    "weights_error",
    "warn_once",
]
