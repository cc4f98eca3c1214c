"""Retrieval on a mixed Japanese/English corpus: hit rate at k=3 and k=15, per question language.

What it shows users: how much the English-only default embedding model (all-MiniLM-L6-v2) costs them
on Japanese documents. The corpus is the sample English trade-bloc corpus (20 files) plus twelve
Japanese documents in ``benchmarks/data/mixed_ja_en/ja`` (some re-encoded to Shift-JIS, CP932,
EUC-JP and UTF-16 on the way, as in users' folders), indexed with ``build_index`` exactly as the
``index`` recipe does. A question is a *hit at k* when one of its answer files is among the files of
the top-k retrieved chunks (plain retrieval, as ``query`` without POVs at k=3, or before POV
reranking at k=15).

Run (from the repository root)::

    .venv/bin/python -m benchmarks.retrieval_ja_en --out benchmarks/results/cpu_retrieval_ja_en.json
    .venv/bin/python -m benchmarks.retrieval_ja_en --embed-model path/to/multilingual-e5-base   # another model
    .venv/bin/python -m benchmarks.retrieval_ja_en --chunk-unit tokens --chunk-size 384 --chunk-overlap 24
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.common import loadavg, machine, write_json

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "data" / "mixed_ja_en"
ENGLISH = REPO / "llama_unsloth" / "data" / "corpus"
# Japanese files saved the way Windows tools and older Unix systems save them.
ENCODINGS = {
    "shinkansen.txt": "shift_jis",
    "tea_ceremony.txt": "cp932",
    "fuji.txt": "euc_jp",
    "haiku.txt": "utf-16",
    "washoku.txt": "utf-8-sig",
}
KS = (3, 15)


def build_corpus(folder: Path) -> Path:
    """English sample corpus at the top, Japanese documents under ``ja/`` in their encodings."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in ENGLISH.glob("*.txt"):
        shutil.copy(path, folder / path.name)
    (folder / "ja").mkdir(exist_ok=True)
    for path in sorted((DATA / "ja").glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        (folder / "ja" / path.name).write_bytes(text.encode(ENCODINGS.get(path.name, "utf-8")))
    return folder


def hit_rates(results: Sequence[Dict[str, Any]], ks: Sequence[int] = KS) -> Dict[str, Dict[str, Any]]:
    """Per language group (and ``all``): questions and hit rate at each k."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r["lang"], []).append(r)
    groups["all"] = list(results)
    return {
        lang: {
            "questions": len(rs),
            **{f"hit@{k}": round(sum(r["rank"] is not None and r["rank"] <= k for r in rs) / len(rs), 3) for k in ks},
        }
        for lang, rs in groups.items()
    }


def run(
    embed_model: Optional[str], chunk_unit: str, chunk_size: Optional[int], chunk_overlap: Optional[int]
) -> Dict[str, Any]:
    """Indexes the corpus in a temp folder, asks every question, returns the result dict."""
    from llama_unsloth.rag import build_index, embed_model_id, make_embed_model, short_model_name, source_info

    questions = json.loads((DATA / "questions.json").read_text(encoding="utf-8"))
    model = make_embed_model("huggingface", embed_model)
    with tempfile.TemporaryDirectory() as tmp:
        docs = build_corpus(Path(tmp) / "docs")
        began = time.perf_counter()
        index, stats = build_index(
            docs,
            Path(tmp) / "chroma",
            embed_model=model,
            chunk_unit=chunk_unit,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            progress=False,
            warn=None,
        )
        index_seconds = time.perf_counter() - began
        retriever = index.as_retriever(similarity_top_k=max(KS))
        results = []
        for q in questions:
            nodes = retriever.retrieve(q["question"])
            files = []
            for node in nodes:
                path = Path(node.node.metadata["file_path"])
                files.append(str(path.relative_to(docs)))
            rank = next((i for i, f in enumerate(files, 1) if f in q["files"]), None)
            results.append(
                {
                    **q,
                    "rank": rank,
                    "top3": files[:3],
                    "top_similarity": source_info(nodes[0]).get("similarity") if nodes else None,
                }
            )
    return {
        "benchmark": "retrieval_ja_en",
        "machine": machine(),
        "loadavg": loadavg(),
        "embed_model": embed_model_id(model),
        "embed_model_name": short_model_name(model),
        "chunking": {"unit": chunk_unit, "size": chunk_size, "overlap": chunk_overlap},
        "corpus": {
            "files": stats.files_new,
            "chunks": stats.chunks_total,
            "encodings": stats.encodings,
            "chunks_longer_than_embedding_window": stats.long_chunks.chunks if stats.long_chunks else 0,
        },
        "index_seconds": round(index_seconds, 2),
        "hit_rates": hit_rates(results),
        # What ranking chunks at random would score for a question answered by one single-chunk file.
        "random_baseline": {f"hit@{k}": round(min(1.0, k / max(1, stats.chunks_total)), 3) for k in KS},
        "questions": results,
    }


def markdown(result: Dict[str, Any]) -> str:
    """The table for BENCHMARKS.md."""
    lines = ["| questions | n | hit@3 | hit@15 |", "| --- | --- | --- | --- |"]
    names = {
        "en": "English -> English files",
        "ja": "Japanese -> Japanese files",
        "en->ja": "English -> answer only in Japanese",
        "ja->en": "Japanese -> answer only in English",
        "all": "all",
    }
    for lang, row in result["hit_rates"].items():
        lines.append(f"| {names.get(lang, lang)} | {row['questions']} | {row['hit@3']:.2f} | {row['hit@15']:.2f} |")
    base = result["random_baseline"]
    lines.append(f"| (random ranking, for scale) | - | {base['hit@3']:.2f} | {base['hit@15']:.2f} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--embed-model", default=None, help="Embedding model folder or hub name (default: bundled MiniLM)."
    )
    parser.add_argument("--chunk-unit", default="characters", choices=("characters", "tokens"))
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--chunk-overlap", type=int, default=None)
    parser.add_argument("--out", default=None, help="Write the JSON result here.")
    args = parser.parse_args(argv)
    result = run(args.embed_model, args.chunk_unit, args.chunk_size, args.chunk_overlap)
    print(
        f"{result['corpus']['files']} files, {result['corpus']['chunks']} chunks ({result['chunking']['unit']}); model {result['embed_model_name']}"
    )
    print(markdown(result))
    misses = [q for q in result["questions"] if q["rank"] is None or q["rank"] > 3]
    for q in misses:
        print(f"  miss@3 [{q['lang']}] {q['question']} -> want {q['files'][0]}, got {q['top3']} (rank {q['rank']})")
    write_json(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
