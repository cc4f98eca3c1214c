"""Random-weight checkpoints of our users' architectures, written the way they download them: bitsandbytes 4-bit.

Weights do not change speed or memory, so the GPU runs build a checkpoint from the real configuration
(``benchmarks/architectures.py``) instead of downloading one. Our users load pre-quantized
``unsloth/*-bnb-4bit`` checkpoints, so ``--weights nf4`` writes exactly that: the model is created in
bf16 on the GPU, every decoder projection is quantized to NF4 (double quantization, blocksize 64, as
transformers does when it loads with ``BitsAndBytesConfig(load_in_4bit=True)``), and the folder is
saved with its ``quantization_config``. A full-depth Gemma-2-27B is then ~16 GB on disk instead of
54 GB of bf16 (the GPU machine has 64 GB of disk).

    python -m benchmarks.gpu.checkpoints gemma2-27b /tmp/gemma2-27b --tokenizer-dir .gpu/tok
    python -m benchmarks.gpu.checkpoints phi3-medium-14b /tmp/phi3-2l --layers 2 --tokenizer-dir .gpu/tok
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

BNB_CONFIG = {
    "load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": True,
    "bnb_4bit_compute_dtype": "bfloat16",
    "bnb_4bit_quant_storage": "uint8",
}


def quantize_decoder_linears(model: Any, device: str) -> int:
    """Replaces every ``nn.Linear`` inside the decoder layers by a bitsandbytes NF4 ``Linear4bit``, in place.

    Embeddings and ``lm_head`` stay in 16 bits, as in transformers' own 4-bit loading (and Unsloth's
    ``-bnb-4bit`` uploads). Returns the number of layers quantized.
    """
    import bitsandbytes as bnb
    import torch

    count = 0
    for layer in model.model.layers:
        for parent in list(layer.modules()):
            for child_name, child in list(parent.named_children()):
                if type(child) is not torch.nn.Linear:
                    continue
                quantized = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    compute_dtype=torch.bfloat16,
                    compress_statistics=True,
                    quant_type="nf4",
                    quant_storage=torch.uint8,
                    device="meta",
                )
                quantized.weight = bnb.nn.Params4bit(
                    child.weight.data.to(torch.bfloat16),
                    requires_grad=False,
                    compress_statistics=True,
                    quant_type="nf4",
                    blocksize=64,
                    quant_storage=torch.uint8,
                ).to(device)
                if child.bias is not None:
                    quantized.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, child_name, quantized)
                count += 1
        if device != "cpu":
            torch.cuda.empty_cache()
    return count


def build(
    name: str,
    folder: str | Path,
    tokenizer: Any,
    *,
    layers: Optional[int] = None,
    weights: str = "nf4",
    device: Optional[str] = None,
    seed: int = 0,
    **overrides: Any,
) -> Dict[str, Any]:
    """Writes a random-weight checkpoint of architecture ``name`` (a key of ``benchmarks.architectures.ARCHITECTURES``).

    Args:
        name: ``llama3-8b``, ``mistral-nemo-12b``, ``phi3-medium-14b`` or ``gemma2-27b``.
        folder: Output folder (model + tokenizer).
        tokenizer: The tokenizer saved with it; its special-token ids go into the config.
        layers: Decoder layers (``None``: the real depth).
        weights: ``nf4`` (pre-quantized bitsandbytes 4-bit, what our users download) or ``bf16``.
        device: Where the weights are created (``cuda`` if available).
        seed: Seed of the random weights.
        **overrides: Other config fields.

    Returns:
        What was built: parameters, depth, seconds, bytes on disk.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from benchmarks.architectures import ARCHITECTURES

    arch = ARCHITECTURES[name]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = arch.config(num_hidden_layers=layers, **{k: v for k, v in ids.items() if v is not None}, **overrides)
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"{name}: the tokenizer has {len(tokenizer)} tokens, more than vocab_size {config.vocab_size}."
        )
    began = time.time()
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    quantized = 0
    if weights == "nf4":
        quantized = quantize_decoder_linears(model, device)
        from transformers import BitsAndBytesConfig

        model.config.quantization_config = BitsAndBytesConfig(**BNB_CONFIG)
    elif weights != "bf16":
        raise ValueError(f"weights must be nf4 or bf16, got {weights!r}.")
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    if device != "cpu":
        torch.cuda.empty_cache()
    info = {
        "architecture": name,
        "checkpoint_of": arch.checkpoint,
        "params": params,
        "layers": config.num_hidden_layers,
        "real_layers": arch.real["num_hidden_layers"],
        "weights": weights,
        "quantized_linears": quantized,
        "seconds": round(time.time() - began, 1),
        "bytes_on_disk": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
    }
    (folder / "built.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("architecture")
    parser.add_argument("folder")
    parser.add_argument("--layers", type=int, default=None, help="decoder layers (default: the real depth)")
    parser.add_argument("--weights", choices=["nf4", "bf16"], default="nf4")
    parser.add_argument(
        "--tokenizer-dir", default=None, help="SmolLM2 tokenizer folder the family stand-in is built from"
    )
    args = parser.parse_args(argv)
    from benchmarks.architectures import family_tokenizer

    tokenizer = family_tokenizer(args.architecture, base_dir=args.tokenizer_dir)
    print(json.dumps(build(args.architecture, args.folder, tokenizer, layers=args.layers, weights=args.weights)))


if __name__ == "__main__":
    main()
