"""Unpacking tinygemm's tile-packed int4 weights for prompts (issue 13).

The real packing (``aten._convert_weight_to_int4pack``) runs on CUDA only; here a stand-in packs with a random
order inside each tile, so finding the order, unpacking and dequantizing are proven without knowing it. The GPU
tests and ``verify`` check the real one against tinygemm's own product.
"""

from __future__ import annotations

import pytest

from llama_unsloth.decoding import tinygemm


def _fake_pack(order):
    """Packs ``[N, K]`` values (0..15) like tinygemm's layout: tiles of 8 x 128, slot p holds tile value order[p]."""
    import torch

    def pack(values):
        n, k = values.shape
        tiles = values.reshape(n // 8, 8, k // 128, 128).permute(0, 2, 1, 3).reshape(n // 8, k // 128, 1024)
        slots = tiles[..., order].reshape(n // 8, k // 128, 32, 4, 8).to(torch.int32)
        shifts = torch.arange(0, 32, 4, dtype=torch.int32)
        return (slots << shifts).sum(-1, dtype=torch.int32)  # 8 nibbles per int32, lowest first

    return pack


def test_tile_order_is_read_back_from_the_packing_and_unpacking_restores_the_weight() -> None:
    import torch

    torch.manual_seed(0)
    secret = torch.randperm(1024)
    pack = _fake_pack(secret)
    order = tinygemm.tile_order("cpu", pack)
    n, k, group = 24, 384, 128  # 3 x 3 tiles; the real weight is cut back to 20 x 300 (torchao pads)
    values = torch.randint(0, 16, (n, k))
    assert torch.equal(
        tinygemm._nibbles(pack(values))
        .index_select(-1, order)
        .reshape(n // 8, k // 128, 8, 128)
        .permute(0, 2, 1, 3)
        .reshape(n, k),
        values,
    )
    scale = torch.rand(k // group, n) + 0.5
    zero = torch.randn(k // group, n)
    scale_and_zero = torch.stack([scale, zero], dim=-1).to(torch.bfloat16)  # torchao's [K / group, N, 2]
    weight = tinygemm.unpack_int4(pack(values), scale_and_zero, group, (20, 300), order)
    expected = (values.float() - 8).view(n, k // group, group) * scale_and_zero[..., 0].t().float()[:, :, None]
    expected = (expected + scale_and_zero[..., 1].t().float()[:, :, None]).view(n, k)[:20, :300]
    assert weight.dtype == torch.bfloat16 and weight.shape == (20, 300)
    torch.testing.assert_close(weight, expected.to(torch.bfloat16))


def test_a_packing_that_mixes_tiles_is_refused() -> None:
    import torch

    def mixing(values):  # swaps the two row tiles' halves: not a per-tile order
        return _fake_pack(torch.arange(1024))(torch.cat([values[4:12], values[:4], values[12:]]))

    with pytest.raises(ValueError, match="tiles"):
        tinygemm.tile_order("cpu", mixing)


def test_prompt_rows_take_the_unpacked_weight_and_decode_rows_keep_tinygemm() -> None:
    import torch

    tinygemm_rows = []

    class Int4TilePackedTo4dTensor(torch.Tensor):  # torchao's class name and parts; its linear is "tinygemm"
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if func is torch.nn.functional.linear:
                tinygemm_rows.append(args[0].shape[0])
                return torch.zeros(args[0].shape[0], 16)
            return super().__torch_function__(func, types, args, kwargs or {})

    weight = torch.zeros(16, 128).as_subclass(Int4TilePackedTo4dTensor)
    weight.qdata, weight.scale_and_zero, weight.block_size = None, None, [1, 128]
    dense = torch.randn(16, 128)
    mode = tinygemm.DequantizedPrefill(order=None, unpack=lambda *args: dense)
    rows = torch.randn(40, 128)
    with mode:
        prompt = torch.nn.functional.linear(rows, weight)
        decode = torch.nn.functional.linear(rows[:8], weight)
    assert mode.calls == 1 and tinygemm_rows == [8]
    torch.testing.assert_close(prompt, rows @ dense.t())
    assert not decode.any()

    def broken(*args):
        raise RuntimeError("compile failed")

    failing = tinygemm.DequantizedPrefill(order=None, unpack=broken)
    with failing:
        torch.nn.functional.linear(rows, weight)  # tinygemm answers, and stays in use
        torch.nn.functional.linear(rows, weight)
    assert failing.broken and "compile failed" in failing.broken and failing.calls == 0
    assert tinygemm_rows == [8, 40, 40]
