"""llama_unsloth.models.dtypes: one dtype rule for loading, merging, training and fast decoding; one NF4 setting."""

from __future__ import annotations

import pytest


def test_names_map_to_torch_dtypes_and_unknown_names_say_which_are_known() -> None:
    import torch

    from llama_unsloth.models import DTYPE_NAMES, torch_dtype

    assert [torch_dtype(name, on_gpu=False) for name in DTYPE_NAMES] == [torch.float32, torch.bfloat16, torch.float16]
    assert torch_dtype(torch.float16, on_gpu=False) is torch.float16
    with pytest.raises(ValueError, match="Unknown dtype 'int8': use float32, bfloat16, float16 or None."):
        torch_dtype("int8", on_gpu=False)


def test_auto_is_the_gpus_16_bit_type_and_fp32_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from llama_unsloth import import_utils
    from llama_unsloth.models import auto_dtype, torch_dtype

    assert torch_dtype(None, on_gpu=False) is torch_dtype("auto", on_gpu=False) is torch.float32
    # A merged model saved from a CPU run is still written in 16 bits.
    assert auto_dtype(on_gpu=False, sixteen_bit=True) is torch.bfloat16
    for bf16, expected in ((True, torch.bfloat16), (False, torch.float16)):  # an A100/L4, then a T4
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        assert auto_dtype(on_gpu=True) is auto_dtype(on_gpu=True, sixteen_bit=True) is expected
        assert torch_dtype(None, on_gpu=True) is expected
    # on_gpu unset: whether this machine has CUDA.
    monkeypatch.setattr(import_utils, "cuda_available", lambda: False)
    assert auto_dtype() is torch.float32


def test_nf4_is_double_quantized_and_computes_in_the_given_dtype() -> None:
    import torch

    from llama_unsloth.models import nf4_config

    config = nf4_config(torch.float16)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype is torch.float16
