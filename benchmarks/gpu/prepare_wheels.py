"""Builds .whl/gpu: the wheels the GPU machine lacks, slimmed to fit one 64 MiB device call.

The GPU machine (Python 3.12, torch + transformers + peft preinstalled, no network) needs unsloth's stack
(shared/gpu wheels-A) and llama-index-core (from wheels-B). Together they exceed what one call may carry,
so this drops what our code never imports there: unsloth's `studio/` web app (26 MB), chromadb and its
kubernetes client (the GPU runs use LlamaIndex's in-memory vector store).

    ../shared/gpu/fetch-wheels.sh .whl          # once: .whl/A and .whl/B
    python3 benchmarks/gpu/prepare_wheels.py    # -> .whl/gpu (~43 MB)

On the GPU machine, first thing in each command:
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/gpu/*.whl
    export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

SKIP_WHEELS = ("chromadb-", "kubernetes-", "llama_index_vector_stores_chroma-")
# Pure-Python packages our recipes import that the GPU image lacks.
EXTRA = ("openpyxl==3.1.5", "et-xmlfile==2.0.0", "llama-index-llms-huggingface==0.8.0")
DROP_PREFIXES = {"unsloth-": ("studio/",)}


def slim(src: Path, dest: Path, prefixes: tuple) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            name = info.filename
            if name.startswith(prefixes):
                continue
            data = zin.read(name)
            if name.endswith(".dist-info/RECORD"):
                lines = [line for line in data.decode().splitlines() if not line.startswith(prefixes)]
                data = ("\n".join(lines) + "\n").encode()
            zout.writestr(info, data)


def main(root: str = ".whl") -> None:
    out = Path(root) / "gpu"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    seen = set()
    for group in ("A", "B"):
        for wheel in sorted((Path(root) / group).glob("*.whl")):
            project = wheel.name.split("-")[0].lower()
            if wheel.name.startswith(SKIP_WHEELS) or project in seen:
                continue
            seen.add(project)
            prefixes = next((p for k, p in DROP_PREFIXES.items() if wheel.name.startswith(k)), None)
            if prefixes:
                slim(wheel, out / wheel.name, prefixes)
            else:
                shutil.copy2(wheel, out / wheel.name)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(out), *EXTRA],
        check=True,
    )
    total = sum(f.stat().st_size for f in out.iterdir())
    print(f"{out}: {len(seen)} wheels, {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main(*sys.argv[1:])
