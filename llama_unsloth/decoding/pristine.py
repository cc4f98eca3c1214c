"""Plain transformers code for the fast path, after Unsloth patched transformers in this process.

Unsloth patches transformers' model classes in place (their ``forward`` methods, and replaces some classes in
the modeling modules) once ``FastLanguageModel`` has loaded a model in the process. The fast path never runs
that code: :func:`plain_causal_lm_class` builds the model class from a *fresh copy* of transformers' modeling
module (executed again from transformers' own file, so every class and function in it is the original)
whenever the registered module shows any sign of patching, or unsloth is imported, and
:func:`foreign_forwards` then checks that every submodule's ``forward`` is code from transformers or torch.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

from llama_unsloth.errors import FastDecodeUnavailable


def _allowed_roots() -> Tuple[str, ...]:
    """The folders of the code the fast path may run: transformers, torch, and torchao (its weights' kernels)."""
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
    """The file ``function``'s code comes from (through decorators' wrappers); "" for code without a file."""
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
    """``transformers.models.<name>.modeling_<name>`` for ``config``'s model type."""
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


__all__ = ["foreign_forwards", "plain_causal_lm_class", "pristine_modeling_module"]
