"""Loading models: the backend (Unsloth or transformers), the dtype, 4-bit, adapter folders, embedding models.

* :mod:`~llama_unsloth.models.loading`: the backend and :func:`load_model`.
* :mod:`~llama_unsloth.models.paths`: what a model folder holds (full model, adapter and its base,
  pre-quantized checkpoint) and its ``config.json``.
* :mod:`~llama_unsloth.models.dtypes`: the dtype a model gets (:func:`auto_dtype`) and NF4 (:func:`nf4_config`).
* :mod:`~llama_unsloth.models.embeddings`: the embedding models.

Other packages import these names from here, never from the modules inside (which may move).
"""

from llama_unsloth.errors import ModelLoadError
from llama_unsloth.models.dtypes import DTYPE_NAMES, auto_dtype, nf4_config, torch_dtype
from llama_unsloth.models.embeddings import (
    COHERE_API_KEY_ENV_VARS,
    COHERE_MODEL,
    cohere_embedding,
    embed_backend_of,
    embed_fingerprint,
    embed_model_folder,
    embed_model_id,
    embed_model_name,
    embedding_dimension,
    huggingface_embedding,
    make_embed_model,
)
from llama_unsloth.models.fingerprints import folder_fingerprint
from llama_unsloth.models.loading import BACKENDS, load_model, resolve_backend
from llama_unsloth.models.paths import (
    adapter_base,
    check_model_path,
    is_adapter_folder,
    is_prequantized,
    read_model_config,
)

__all__ = [
    "BACKENDS",
    "COHERE_API_KEY_ENV_VARS",
    "COHERE_MODEL",
    "DTYPE_NAMES",
    "ModelLoadError",
    "adapter_base",
    "auto_dtype",
    "check_model_path",
    "cohere_embedding",
    "embed_backend_of",
    "embed_fingerprint",
    "folder_fingerprint",
    "embed_model_folder",
    "embed_model_id",
    "embed_model_name",
    "embedding_dimension",
    "huggingface_embedding",
    "is_adapter_folder",
    "is_prequantized",
    "load_model",
    "make_embed_model",
    "nf4_config",
    "read_model_config",
    "resolve_backend",
    "torch_dtype",
]
