"""Shared helpers for the recipe tests: a small corpus, a cached MiniLM, global-state hygiene."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

DATA = Path(__file__).resolve().parents[2] / "llama_unsloth" / "data"
SMALL_CORPUS = [
    "mercosur.txt",
    "usmca.txt",
    "customs_unions_vs_free_trade_areas.txt",
    "ecowas_overview.txt",
    "ecowas_overview_copy.txt",
    "non_tariff_barriers.txt",
]
_EMBED: List[Any] = []


def embed_model() -> Any:
    """The bundled MiniLM, loaded once per test session."""
    if not _EMBED:
        from llama_unsloth.models import huggingface_embedding

        _EMBED.append(huggingface_embedding())
    return _EMBED[0]


def reuse_embed_model(monkeypatch: Any) -> None:
    """Makes ``make_embed_model()`` (default MiniLM) return the session's instance instead of reloading it.

    Patched where it is looked up: the recipes take it from ``llama_unsloth.rag``, ``open_index`` from
    ``llama_unsloth.rag.store`` and ``build_index`` from ``llama_unsloth.rag.indexing``.
    """
    import llama_unsloth.rag
    from llama_unsloth.rag import indexing, store

    real = llama_unsloth.rag.make_embed_model

    def make(backend: str = "huggingface", model_name: Any = None) -> Any:
        if backend == "huggingface" and (
            model_name is None or model_name == llama_unsloth.rag.embed_model_id(embed_model())
        ):
            return embed_model()
        return real(backend, model_name)

    for module in (llama_unsloth.rag, store, indexing):
        monkeypatch.setattr(module, "make_embed_model", make)


def small_corpus(folder: Path) -> Path:
    """Copies six sample documents (incl. the two ECOWAS near-duplicates) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in SMALL_CORPUS:
        shutil.copy(DATA / "corpus" / name, folder / name)
    return folder


def build_small_index(root: Path, collection: str = "documents") -> Path:
    """Indexes the small corpus into ``root/chroma``; returns the persist dir."""
    from llama_unsloth.rag import build_index

    persist = root / "chroma"
    build_index(small_corpus(root / "docs"), persist, collection, embed_model=embed_model(), progress=False)
    return persist


def exit_code(main: Any, argv: List[str]) -> int:
    """A recipe's exit code: what ``main`` returns, or the code of the ``SystemExit`` a user error raises."""
    try:
        return int(main(argv) or 0)
    except SystemExit as exit_:
        return int(exit_.code or 0)


# The finetune recipe's options for the marker tests: a tiny model on CPU learns a fixed answer in seconds.
TRAIN = [
    "--per-device-train-batch-size",
    "4",
    "--gradient-accumulation-steps",
    "1",
    "--warmup-steps",
    "2",
    "--learning-rate",
    "3e-2",
    "--max-seq-length",
    "1024",
    "--backend",
    "transformers",
    "--no-load-in-4bit",
    "--use-gradient-checkpointing",
    "false",
    "--completion-only-loss",
]


def finetune_recipe(
    tmp_path: Path,
    model: Path,
    template: str,
    steps: int,
    extra: List[str],
    records: List[Dict[str, Any]],
    *,
    threads: Optional[int] = None,
    max_loss: Optional[float] = None,
) -> Path:
    """Runs ``recipes.finetune.main`` on ``records`` (written to ``tmp_path/train.json``); returns the output folder.

    Args:
        threads: torch's CPU threads while training (restored after), so that the run is the same on any number
            of cores; ``None`` leaves torch's setting.
        max_loss: When given, the run must end learned: ``train_log.json``'s final loss and each of its last 10
            step losses below it. A marker test that fails this says "did not learn", not "wrong layout".
    """
    import torch

    from recipes.finetune import main

    data = tmp_path / "train.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    out = tmp_path / "out"
    argv = ["--model", str(model), "--data", str(data), "--prompt-format", template, "--output-dir", str(out)]
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        assert main([*argv, "--max-steps", str(steps), *TRAIN, *extra]) == 0
    finally:
        torch.set_num_threads(saved)
    if max_loss is not None:
        assert_learned(out, max_loss, note=f"torch threads {threads or saved}")
    return out


def assert_learned(out: Path, max_loss: float, last: int = 10, note: str = "") -> List[float]:
    """Asserts that the run in ``out`` learned: its final loss and each of its ``last`` step losses below ``max_loss``.

    Returns:
        The per-step losses of ``train_log.json``.
    """
    log = json.loads((out / "train_log.json").read_text(encoding="utf-8"))
    losses = [float(step["loss"]) for step in log["steps"]]
    tail = losses[-last:]
    assert log["final_loss"] is not None and log["final_loss"] < max_loss and max(tail) < max_loss, (
        f"the tiny model did not learn its training data in {log['global_step']} steps (so the answers below would "
        f"say nothing about the layout): final loss {log['final_loss']:.4f}, last {last} step losses "
        f"{[round(x, 4) for x in tail]}, all must be < {max_loss}; lr {log['settings']['learning_rate']} {note}"
    )
    return losses
