"""The fast path's weights: a plain 16-bit transformers model (adapters merged), then torchao int8 / int4.

Weights are ``bf16`` (the merged 16-bit model), or torchao ``int8`` / ``int4`` weight-only (int4 in the
tile-packed tinygemm format, group :data:`INT4_GROUP_SIZE`; ``lm_head`` stays 16-bit). int4 prompts go
through :mod:`llama_unsloth.decoding.tinygemm`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from llama_unsloth.decoding.pristine import foreign_forwards, plain_causal_lm_class
from llama_unsloth.errors import FastDecodeUnavailable

INT4_GROUP_SIZE = 128


def load_fast_model(
    model_name: str, *, dtype: Any = None, trust_remote_code: bool = False, device: Optional[str] = None
) -> Tuple[Any, Any]:
    """``(model, tokenizer)`` in 16-bit with transformers' own classes: a merged model, or an adapter merged in.

    An adapter folder is loaded onto its base, merged (``merge_and_unload``) and, when the base was a
    pre-quantized bitsandbytes checkpoint, dequantized: the fast path always starts from plain 16-bit weights.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from llama_unsloth.models import adapter_base, auto_dtype, is_adapter_folder

    # The one dtype choice of the package: bf16 (fp16 on GPUs without bf16) on a GPU, fp32 on the CPU.
    dtype = dtype or auto_dtype()
    device = device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    adapter = is_adapter_folder(model_name)
    base_name = adapter_base(model_name) if adapter else model_name
    if base_name is None:
        raise FastDecodeUnavailable(f"the adapter folder {model_name} names no base_model_name_or_path")
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


__all__ = ["INT4_GROUP_SIZE", "load_fast_model", "quantize_weights"]
