"""Peak GPU memory of the finetune recipe at full depth, for our users' architectures, against a 22 GB L4.

For each architecture a full-depth random-weight checkpoint is built in pre-quantized NF4
(``benchmarks/gpu/checkpoints.py``: what our users download as ``unsloth/*-bnb-4bit``), then the
finetune recipe itself runs in its own process (Unsloth backend, SPEC defaults: LoRA r=16 on the seven
projections, adamw_8bit, Unsloth gradient checkpointing) for ``--steps`` optimizer steps on records
longer than the sequence length, so every sequence is full length. Each run records the recipe's own
``train_log.json`` (``torch.cuda.max_memory_allocated`` and ``max_memory_reserved``), the step time,
tokens/s, and the memory plan the recipe printed before loading (``llama_unsloth/training/memory.py``).
A run spec ``ARCH:BxG@SEQ`` is batch x accumulation at SEQ tokens; ``:capN`` runs it in a process limited
to N GB of the GPU (``torch.cuda.set_per_process_memory_fraction``), the way an N GB card would be.

Command (GPU machine, from the repository root; see BENCHMARKS.md "Fine-tune memory")::

    python -m benchmarks.gpu.finetune_memory --tokenizer-dir .gpu/tok --work /tmp/fm \\
        --run gemma2-27b:2x4@2048 --run gemma2-27b:1x8@2048 --run mistral-nemo-12b:2x4@2048 \\
        --steps 2 --budget-s 540 --out $OUT/gpu_finetune_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from benchmarks.common import machine, write_json
from benchmarks.finetune_speed import make_dataset

RUN_SPEC = re.compile(r"^(?P<arch>[\w.-]+):(?P<batch>\d+)x(?P<accum>\d+)@(?P<seq>\d+)(?::cap(?P<cap>[\d.]+))?$")
# Switches tried in turn when Unsloth's compiled training step fails in torch inductor (seen with Gemma-2 on
# torch 2.11): its per-block compile off, then every torch.compile off.
COMPILE_WORKAROUNDS: List[Dict[str, str]] = [
    {},
    {"UNSLOTH_BLOCK_COMPILE": "0"},
    {"UNSLOTH_COMPILE_DISABLE": "1", "TORCHDYNAMO_DISABLE": "1"},
]
GB = 1e9
GIB = 2**30


def parse_run(spec: str) -> Dict[str, Any]:
    match = RUN_SPEC.match(spec)
    if not match:
        raise SystemExit(f"error: --run must look like gemma2-27b:2x4@2048 (optionally :cap22); got {spec!r}.")
    run = match.groupdict()
    return {
        "architecture": run["arch"],
        "batch": int(run["batch"]),
        "accumulation": int(run["accum"]),
        "seq": int(run["seq"]),
        "cap_gb": float(run["cap"]) if run["cap"] else None,
        "spec": spec,
    }


def build_checkpoint(arch: str, folder: Path, tokenizer_dir: Optional[str], timeout: float) -> Dict[str, Any]:
    if (folder / "built.json").is_file():
        return json.loads((folder / "built.json").read_text(encoding="utf-8"))
    command = [sys.executable, "-m", "benchmarks.gpu.checkpoints", arch, str(folder), "--weights", "nf4"]
    if tokenizer_dir:
        command += ["--tokenizer-dir", tokenizer_dir]
    began = time.time()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout)[-2000:], "seconds": round(time.time() - began, 1)}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_with_compile_workarounds(command: List[str], timeout: float, first: int = 0) -> List[Dict[str, Any]]:
    """Runs ``command``; while it fails in torch inductor, runs it again with the next ``COMPILE_WORKAROUNDS``.

    Args:
        command: The process to run (a recipe).
        timeout: Seconds for all attempts together.
        first: Index of the first switches to try.

    Returns:
        One entry per attempt: ``switches``, ``exit_code`` (``"timeout"`` when the time ran out), ``seconds``
        and ``output`` (stdout then stderr).
    """
    began = time.time()
    attempts: List[Dict[str, Any]] = []
    for switches in COMPILE_WORKAROUNDS[first:]:
        started = time.time()
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout - (started - began),
                env={**os.environ, **switches},
                check=False,
            )
            output, code = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as err:
            output, code = str(err.stdout or "") + str(err.stderr or ""), "timeout"
        attempts.append(
            {"switches": switches, "exit_code": code, "seconds": round(time.time() - started, 1), "output": output}
        )
        if code == 0 or "InductorError" not in output:
            break
    return attempts


def recipe_command(
    run: Dict[str, Any], model: Path, data: Path, out: Path, steps: int, backend: str = "unsloth"
) -> List[str]:
    options = [
        "--model",
        str(model),
        "--data",
        str(data),
        "--backend",
        backend,
        "--output-dir",
        str(out),
        "--overwrite_output_dir",  # a retry (another compile workaround) replaces what a failed attempt left
        "--per-device-train-batch-size",
        str(run["batch"]),
        "--gradient-accumulation-steps",
        str(run["accumulation"]),
        "--max-seq-length",
        str(run["seq"]),
        "--max-steps",
        str(steps),
        # Measure every setting, also those the plan says will not fit (the plan is what is being checked).
        "--no-memory-check",
    ]
    if run["cap_gb"]:
        # The recipe sees a card of cap_gb: the allocator refuses more, as that card would.
        launcher = (
            "import runpy, sys, torch; "
            f"torch.cuda.set_per_process_memory_fraction({run['cap_gb'] * GB} / torch.cuda.get_device_properties(0).total_memory); "
            "sys.argv = ['recipes.finetune', *sys.argv[1:]]; runpy.run_module('recipes.finetune', run_name='__main__')"
        )
        return [sys.executable, "-c", launcher, *options, "--gpu-memory-gib", f"{run['cap_gb'] * GB / GIB:.2f}"]
    return [sys.executable, "-m", "recipes.finetune", *options]


def run_recipe(
    run: Dict[str, Any],
    model: Path,
    data: Path,
    work: Path,
    steps: int,
    timeout: float,
    backend: str = "unsloth",
    first_workaround: int = 0,
) -> Dict[str, Any]:
    out = work / f"out-{run['spec'].replace(':', '_').replace('@', '_')}"
    shutil.rmtree(out, ignore_errors=True)
    command = recipe_command(run, model, data, out, steps, backend)
    began = time.time()
    attempts = run_with_compile_workarounds(command, timeout, first_workaround)
    output, code = attempts[-1].pop("output"), attempts[-1]["exit_code"]
    for attempt in attempts:
        attempt.pop("output", None)
        attempt.pop("seconds", None)
    result: Dict[str, Any] = {
        **run,
        "exit_code": code,
        "attempts": attempts,
        "wall_seconds": round(time.time() - began, 1),
    }
    plan = next((line[line.index("Memory plan:") :] for line in output.splitlines() if "Memory plan:" in line), None)
    result["memory_plan"] = plan
    (work / f"{out.name}.log").write_text(output, encoding="utf-8")  # the whole output, kept with the results
    errors = [line for line in output.splitlines() if line.startswith("error:") or "Error:" in line]
    if errors:
        result["error"] = errors[-1]
    log_path = out / "train_log.json"
    if log_path.is_file():
        log = json.loads(log_path.read_text(encoding="utf-8"))
        step_seconds = [s["step_seconds"] for s in log.get("steps", []) if "step_seconds" in s]
        tokens_per_step = run["batch"] * run["accumulation"] * run["seq"]
        result.update(
            peak_allocated_gib=log.get("peak_gpu_memory_gib"),
            peak_reserved_gib=log.get("peak_gpu_memory_reserved_gib"),
            step_seconds=step_seconds,
            tokens_per_second=round(tokens_per_step / step_seconds[-1], 1) if step_seconds else None,
            final_loss=log.get("final_loss"),
            trainable_note=next((line for line in output.splitlines() if "trainable of" in line), None),
        )
        if result.get("peak_reserved_gib") is not None:
            result["peak_reserved_gb"] = round(result["peak_reserved_gib"] * GIB / GB, 2)
    else:
        result["output_tail"] = output[-3000:]
    shutil.rmtree(out, ignore_errors=True)  # adapters of a 27B model: disk is 64 GB
    return result


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, help="ARCH:BxG@SEQ[:capN], in order")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--work", default="/tmp/finetune_memory")
    parser.add_argument("--tokenizer-dir", default=None)
    parser.add_argument("--budget-s", type=float, default=540, help="stop starting runs after this many seconds")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--workaround-from",
        action="append",
        default=[],
        help="ARCH=N: start that architecture's runs at COMPILE_WORKAROUNDS[N] (one known to be needed)",
    )
    args = parser.parse_args(argv)
    runs = [parse_run(spec) for spec in args.run]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "long_records.json"
    make_dataset(data, records=64, words=3000)  # ~3000 tokens per record: every sequence is cut to full length
    began = time.time()
    results: Dict[str, Any] = {
        "command": "python -m benchmarks.gpu.finetune_memory " + " ".join(sys.argv[1:]),
        "runs": [],
    }
    results["machine"] = machine()
    import torch

    if torch.cuda.is_available():
        results["gpu_total_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GIB, 2)
    checkpoints: Dict[str, Any] = {}
    for index, run in enumerate(runs):
        left = args.budget_s - (time.time() - began)
        if left < 60:
            results["runs"].append({**run, "skipped": f"time budget: {left:.0f} s left"})
            continue
        arch = run["architecture"]
        folder = work / f"ckpt-{arch}"
        if arch not in checkpoints:
            checkpoints[arch] = build_checkpoint(arch, folder, args.tokenizer_dir, timeout=left - 30)
            print(json.dumps({"built": checkpoints[arch]}), flush=True)
        if "error" in checkpoints[arch]:
            results["runs"].append({**run, "skipped": "checkpoint build failed"})
        else:
            first = int(dict(item.split("=", 1) for item in args.workaround_from).get(arch, 0))
            result = run_recipe(
                run,
                folder,
                data,
                work,
                args.steps,
                timeout=args.budget_s - (time.time() - began),
                first_workaround=first,
            )
            print(json.dumps(result), flush=True)
            results["runs"].append(result)
        results["checkpoints"] = checkpoints
        write_json(results, args.out)
        if all(r["architecture"] != arch for r in runs[index + 1 :]):
            shutil.rmtree(folder, ignore_errors=True)
    results["seconds"] = round(time.time() - began, 1)
    write_json(results, args.out)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
