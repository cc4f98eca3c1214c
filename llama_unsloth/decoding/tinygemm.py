"""Prompts through int4 weights at bf16 speed: tinygemm's tile-packed int4 unpacked on the fly.

torchao's int4 tile-packed weights (``Int4TilePackedTo4dTensor``) multiply through tinygemm
(``aten._weight_int4pack_mm``), a kernel built for a few rows: at batch 1 it reads the weights at 4 bits, but a
563-token prompt took 287 ms through it on an H200 where the bf16 model takes 28 ms (issue 13), and RAG prompts
are longer. For a prompt, :class:`DequantizedPrefill` (a ``TorchFunctionMode``) instead unpacks each int4 weight
into a temporary bf16 matrix just before its ``F.linear`` and multiplies that: one weight at a time, so memory
stays that of the int4 model plus the unpacking of one ``intermediate_size x hidden_size`` matrix (its bf16
copy; without compile also a few int32/fp32 temporaries of that size, about 1 GB at 14336 x 4096).

The packed order of the values inside a tile is whatever the installed ``aten._convert_weight_to_int4pack``
writes; :func:`tile_order` reads it by packing probe values once (on the GPU), so nothing here hard-codes it,
and :func:`verify` checks the unpacked matrix against tinygemm's own product on the model's
first int4 weight before it is used; where that fails the prompt takes tinygemm as before.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional, Tuple

logger = logging.getLogger(__name__)

TILE_N = 8  # rows of one packed tile
INNER_K_TILES = 8  # torchao's fixed inner_k_tiles for the tile-packed format
TILE_K = INNER_K_TILES * 16  # columns of one packed tile
MIN_PREFILL_ROWS = 32  # fewer rows (decode, small batches): tinygemm is the faster kernel
TINYGEMM_MIDPOINT = 8  # tinygemm's zero point sits at the middle of 0..15: w = (q - 8) * scale + zero


def _default_pack(values: Any) -> Any:
    """``values`` [N, K] in 0..15 -> the int32 tile-packed tensor, as torchao packs it (two per byte, high first)."""
    import torch

    pairs = (values[:, ::2] << 4 | values[:, 1::2]).to(torch.uint8)
    return torch.ops.aten._convert_weight_to_int4pack(pairs.contiguous(), INNER_K_TILES)


def _nibbles(packed: Any) -> Any:
    """Every 4-bit value of an int32 packed tensor ``[N/8, K/128, ...]``, in memory order: ``[N/8, K/128, 1024]``."""
    import torch

    shifts = torch.arange(0, 32, 4, device=packed.device, dtype=torch.int32)
    values = (packed.unsqueeze(-1) >> shifts) & 15
    return values.reshape(packed.shape[0], packed.shape[1], TILE_N * TILE_K)


_ORDERS: Dict[Tuple[str, int], Any] = {}


def tile_order(device: Any, pack: Optional[Callable[[Any], Any]] = None) -> Any:
    """For each position of a tile's (row, column) values (row-major, 8 x 128), where the packing put it.

    Found by packing a 2 x 2-tile probe three times, the n-th 4 bits of each value's own index in the n-th
    probe, and reading the indexes back; every tile of the probe must give the same order.
    """
    import torch

    key = (str(device), id(pack))
    if key in _ORDERS:
        return _ORDERS[key]
    pack = pack or _default_pack
    rows, cols = 2 * TILE_N, 2 * TILE_K
    index = torch.arange(rows * cols, device=device, dtype=torch.int32).reshape(rows, cols)
    found = torch.zeros((2, 2, TILE_N * TILE_K), dtype=torch.int32, device=device)
    for digit in range(3):  # 4096 positions: three 4-bit digits
        found |= _nibbles(pack((index >> (4 * digit)) & 15)) << (4 * digit)
    n, k = found // cols, found % cols  # the (row, column) of the probe each packed slot holds
    tile_n = torch.arange(2, device=device).view(2, 1, 1)
    tile_k = torch.arange(2, device=device).view(1, 2, 1)
    if not (torch.equal(n // TILE_N, tile_n.expand_as(n)) and torch.equal(k // TILE_K, tile_k.expand_as(k))):
        raise ValueError("tinygemm's packing mixes values of different tiles")
    local = (n % TILE_N) * TILE_K + k % TILE_K  # [2, 2, 1024]: the tile position each packed slot holds
    if not all(torch.equal(local[i, j], local[0, 0]) for i in range(2) for j in range(2)):
        raise ValueError("tinygemm's packing orders tiles differently")
    if not torch.equal(local[0, 0].sort().values, torch.arange(local.shape[-1], device=device, dtype=local.dtype)):
        raise ValueError("tinygemm's packing is not a reordering of each tile")
    order = torch.empty_like(local[0, 0])
    order[local[0, 0]] = torch.arange(local.shape[-1], device=device, dtype=torch.int32)
    _ORDERS[key] = order.long()
    return _ORDERS[key]


def unpack_int4(qdata: Any, scale_and_zero: Any, group_size: int, shape: Tuple[int, int], order: Any) -> Any:
    """The bf16 matrix ``[out, in]`` a tile-packed int4 weight stands for (padding cut off)."""
    import torch

    tiles_n, tiles_k = qdata.shape[0], qdata.shape[1]
    values = _nibbles(qdata).index_select(-1, order)  # [N/8, K/128, 1024] in (row, column) order
    values = values.view(tiles_n, tiles_k, TILE_N, TILE_K).permute(0, 2, 1, 3).reshape(tiles_n * TILE_N, -1)
    rows, cols = values.shape
    scale = scale_and_zero[..., 0].t().float()  # [N, K / group]: torchao packs [K / group, N, (scale, zero)]
    zero = scale_and_zero[..., 1].t().float()
    grouped = (values.float() - TINYGEMM_MIDPOINT).view(rows, cols // group_size, group_size)
    weight = grouped * scale[:rows, :, None] + zero[:rows, :, None]
    return weight.view(rows, cols)[: shape[0], : shape[1]].to(torch.bfloat16)


def is_tile_packed_int4(weight: Any) -> bool:
    """True for torchao's ``Int4TilePackedTo4dTensor`` (by its parts, so torchao need not be imported here)."""
    return type(weight).__name__ == "Int4TilePackedTo4dTensor" and hasattr(weight, "scale_and_zero")


def _mode_base() -> Any:
    from torch.overrides import TorchFunctionMode

    return TorchFunctionMode


class DequantizedPrefill(_mode_base()):  # type: ignore[misc]
    """Inside it, ``F.linear`` of ``MIN_PREFILL_ROWS`` or more rows by a tile-packed int4 weight runs in bf16.

    Args:
        order: :func:`tile_order` for the weights' device.
        unpack: :func:`unpack_int4`, or a compiled copy of it (one fused kernel per weight shape).
        min_rows: Fewer input rows keep tinygemm.

    A failure while unpacking (a compile error on a new shape, say) sends that and every later call back to
    tinygemm, with one warning: a prompt never fails here.
    """

    def __init__(self, order: Any, unpack: Callable[..., Any] = unpack_int4, min_rows: int = MIN_PREFILL_ROWS) -> None:
        super().__init__()
        self.order = order
        self.unpack = unpack
        self.min_rows = min_rows
        self.calls = 0
        self.broken: Optional[str] = None

    def dense(self, weight: Any) -> Any:
        """``weight`` unpacked to bf16 with this mode's unpacking."""
        return self.unpack(
            weight.qdata, weight.scale_and_zero, int(weight.block_size[-1]), tuple(weight.shape), self.order
        )

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        import torch

        kwargs = kwargs or {}
        if (
            self.broken is None
            and func is torch.nn.functional.linear
            and len(args) >= 2
            and is_tile_packed_int4(args[1])
            and args[0].numel() // args[0].shape[-1] >= self.min_rows
        ):
            inputs, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            try:
                with torch._C.DisableTorchFunctionSubclass():
                    dense = self.dense(weight)
                    bias = bias.to(dense.dtype) if bias is not None else None
                    out = torch.nn.functional.linear(inputs.to(dense.dtype), dense, bias).to(inputs.dtype)
            except torch.cuda.OutOfMemoryError:  # no room for this matrix now: tinygemm for this call only
                pass
            except Exception as err:  # noqa: BLE001 - tinygemm still works: use it from now on
                self.broken = f"{type(err).__name__}: {err}"
                logger.warning("int4 prompts go back to tinygemm: unpacking failed (%s)", self.broken)
            else:
                self.calls += 1
                return out
        return func(*args, **kwargs)


def verify(weight: Any, mode: DequantizedPrefill) -> Optional[str]:
    """None when ``weight`` unpacked by ``mode`` multiplies like tinygemm itself; else what differed."""
    import torch

    with torch._C.DisableTorchFunctionSubclass():
        dense = mode.dense(weight)
        rows = torch.randn(64, weight.shape[1], device=dense.device, dtype=torch.bfloat16)
        padded = torch.nn.functional.pad(rows, (0, weight.qdata.shape[1] * TILE_K - weight.shape[1]))
        theirs = torch.ops.aten._weight_int4pack_mm(
            padded, weight.qdata, int(weight.block_size[-1]), weight.scale_and_zero
        )[:, : weight.shape[0]]
    ours = rows @ dense.t()
    gap = (ours.float() - theirs.float()).abs().max().item()
    scale = theirs.float().abs().max().item()
    if not gap <= 0.02 * scale + 1e-2:
        return f"unpacked int4 weight multiplies {gap:.3g} away from tinygemm's product (largest {scale:.3g})"
    return None


def prefill_mode(model: Any, compile: bool = False) -> Optional[DequantizedPrefill]:
    """The mode for prompts through ``model``'s int4 weights, or None (no such weights, or unpacking is wrong here).

    Args:
        model: A model whose Linear weights torchao quantized to the tile-packed int4 format.
        compile: Unpack through ``torch.compile`` (fused), compiling each weight shape now; else eager ops.
    """
    import torch

    weights = [m.weight for m in model.modules() if is_tile_packed_int4(getattr(m, "weight", None))]
    if not weights:
        return None
    try:
        # Prompts run under inference mode, and compiled code is specialised to the grad mode it was built in.
        with torch.inference_mode():
            mode, problem = _checked_mode(weights, compile)
    except Exception as err:  # an unknown layout, or kernels this build lacks: prompts keep tinygemm
        mode, problem = None, f"{type(err).__name__}: {err}"
    if problem is not None:
        logger.warning("int4 prompts go through tinygemm (slower on long prompts): %s", problem)
        return None
    return mode


def _checked_mode(weights: Any, compile: bool) -> Tuple[Any, Optional[str]]:
    """The verified mode (compiled where asked and verified), or the problem with it."""
    import torch

    mode = DequantizedPrefill(tile_order(weights[0].device))
    problem = verify(weights[0], mode)
    if problem is None and compile:
        compiled = DequantizedPrefill(mode.order, torch.compile(unpack_int4, dynamic=False))
        if verify(weights[0], compiled) is None:
            shapes: Dict[Any, Any] = {}
            for weight in weights:  # one compile per distinct shape, now rather than in a prompt
                shapes.setdefault((tuple(weight.shape), tuple(weight.qdata.shape)), weight)
            with torch._C.DisableTorchFunctionSubclass():
                for weight in shapes.values():
                    compiled.dense(weight)
            mode = compiled
    return mode, problem


__all__ = [
    "DequantizedPrefill",
    "MIN_PREFILL_ROWS",
    "is_tile_packed_int4",
    "prefill_mode",
    "tile_order",
    "unpack_int4",
    "verify",
]
