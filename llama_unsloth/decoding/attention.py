"""Attention of the one new token: grouped-query attention that reads each cached key/value head once.

:func:`grouped_decode_attention` is registered in transformers' ``AttentionInterface``: the query heads of
each key/value head attend to that head's cache directly, where transformers' SDPA path first copies every
key/value head ``num_attention_heads / num_key_value_heads`` times (it must, with a mask): at a 1024-token
cache that copy was ~1 GB of memory traffic per token at 8B.

Also here: the sliding-window configuration helpers, since the static-cache mask is full attention.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

DECODE_ATTENTION = "llama_unsloth_grouped_decode"


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


def sliding_window(config: Any) -> Optional[int]:
    """The attention window of a model with sliding-window layers (Gemma-2, Phi-3, Mistral), or None."""
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0:
        return None
    if getattr(config, "use_sliding_window", True) is False:  # Qwen2-style configs carry a window they don't use
        return None
    return window


def full_attention_config(config: Any) -> Any:
    """A copy of ``config`` whose every layer is full attention: what StaticCache builds its layers from."""
    import copy

    text = copy.deepcopy(config.get_text_config(decoder=True))
    text.layer_types = ["full_attention"] * int(text.num_hidden_layers)
    return text


__all__ = [
    "DECODE_ATTENTION",
    "full_attention_config",
    "grouped_decode_attention",
    "sliding_window",
    "use_grouped_decode_attention",
]
