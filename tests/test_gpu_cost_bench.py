"""bench/gpu_cost.py on the CPU with the tiny shape, so the GPU benchmark never rots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "gpu_cost.py"


@pytest.mark.slow
def test_bench_runs_every_method_with_and_without_checkpointing(tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    done = subprocess.run([sys.executable, str(BENCH), "--device", "cpu", "--shape", "tiny", "--steps", "2",
                           "--warmup", "1", "--generate", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, check=True)
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [(r.split("|")[1].strip(), r.split("|")[2].strip()) for r in rows] == [
        (m, c) for c in ("off", "on") for m in ("sft", "selfaug", "output_kl")]
    assert "failed" not in done.stdout and "questions/s at batch 2" in done.stdout
    assert out.read_text() in done.stdout + "\n"


def test_bench_needs_only_the_training_stack() -> None:
    """One training case, run as the bench's child, imports no MLflow, lm-eval, datasets or faiss."""
    case = json.dumps({"kind": "train", "method": "selfaug", "checkpointing": "on"})
    code = ("import runpy, sys; sys.argv = ['gpu_cost.py', '--child', sys.argv[1], '--device', 'cpu', '--shape', "
            f"'tiny', '--steps', '1', '--warmup', '0']; runpy.run_path({str(BENCH)!r}, "
            "run_name='__main__'); print(sorted(m for m in ('mlflow', 'lm_eval', 'datasets', 'faiss', "
            "'sentence_transformers', 'bm25s') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, case], capture_output=True, text=True, timeout=300, check=True)
    result, imported = done.stdout.strip().splitlines()[-2:]
    assert json.loads(result)["loss"] > 0
    assert imported == "[]"
