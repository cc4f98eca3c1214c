"""Loading models: the backend (Unsloth or transformers), the dtype, 4-bit, adapter folders, embedding models.

Other packages import these names from here, never from the modules inside (which may move).
"""

from llama_unsloth.errors import ModelLoadError
from llama_unsloth.models.embeddings import (
    COHERE_API_KEY_ENV_VARS,
    COHERE_MODEL,
    cohere_embedding,
    embed_backend_of,
    embed_model_id,
    embedding_dimension,
    huggingface_embedding,
    make_embed_model,
)
from llama_unsloth.models.loading import (
    BACKENDS,
    check_model_path,
    is_adapter_folder,
    is_prequantized,
    load_model,
    resolve_backend,
    torch_dtype,
)

__all__ = [
    "BACKENDS",
    "COHERE_API_KEY_ENV_VARS",
    "COHERE_MODEL",
    "ModelLoadError",
    "check_model_path",
    "cohere_embedding",
    "embed_backend_of",
    "embed_model_id",
    "embedding_dimension",
    "huggingface_embedding",
    "is_adapter_folder",
    "is_prequantized",
    "load_model",
    "make_embed_model",
    "resolve_backend",
    "torch_dtype",
]
