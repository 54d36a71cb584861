"""eval=standard: lm-eval's own task configs, exercised offline on local files of the Hub's shape."""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import pytest
import torch
import yaml
from helpers import compose_config

from ragforget.errors import ConfigError
from ragforget.evaluation.retention.suites import StandardSuite

ARC_ROWS = [
    {"id": f"q{i}", "question": q, "choices": {"text": choices, "label": ["A", "B", "C", "D"]}, "answerKey": key}
    for i, (q, choices, key) in enumerate([
        ("Which is a gas at room temperature?", ["iron", "oxygen", "wood", "salt"], "B"),
        ("What do plants need for photosynthesis?", ["sunlight", "sand", "plastic", "metal"], "A"),
        ("Which planet is closest to the Sun?", ["Mars", "Venus", "Earth", "Mercury"], "D"),
    ])
]


def local_arc_task(folder: Path) -> str:
    """lm-eval's own arc_challenge config, pointed at a local jsonl with the Hub dataset's columns."""
    data = folder / "arc.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ARC_ROWS))
    arc_yaml = Path(lm_eval.__file__).parent / "tasks" / "arc" / "arc_easy.yaml"
    config = {"include": str(arc_yaml), "task": "arc_challenge_local", "tag": [], "dataset_path": "json",
              "dataset_name": None, "dataset_kwargs": {"data_files": {"test": str(data)}},
              "training_split": None, "validation_split": None, "test_split": "test"}
    (folder / "arc_challenge_local.yaml").write_text(yaml.safe_dump(config))
    return "arc_challenge_local"


def test_standard_suite_scores_lm_eval_task_configs(tiny_model_path: str, tmp_path: Path) -> None:
    from ragforget.models.loading import load_model, load_tokenizer

    task = local_arc_task(tmp_path)
    suite = StandardSuite(tasks=[task], primary_metrics={task: "acc_norm"}, include_path=str(tmp_path),
                          batch_size=4)
    suite.prepare(tmp_path, None)
    result = suite.evaluate(load_model(tiny_model_path), load_tokenizer(tiny_model_path), tmp_path / "out")
    assert set(result.primary) == {task}
    assert 0.0 <= result.primary[task] <= 1.0
    assert f"{task}/acc" in result.metrics
    assert (tmp_path / "out" / "retention_results.json").exists()


def test_standard_suite_needs_a_primary_metric_per_task() -> None:
    with pytest.raises(ConfigError, match="eval.retention.primary_metrics"):
        StandardSuite(tasks=["mmlu", "gsm8k"], primary_metrics={"mmlu": "acc"})


def test_eval_standard_composes_lm_eval_task_names() -> None:
    cfg = compose_config(["eval=standard"])
    assert cfg.eval.retention.tasks == ["mmlu", "arc_challenge", "hellaswag", "ifeval", "gsm8k"]
    assert cfg.eval.odqa.max_questions == compose_config([]).eval.odqa.max_questions


class _Head(torch.nn.Module):
    """Just enough of a model for fit_batch_to_memory: an LM head of some vocabulary and dtype (no memory)."""

    def __init__(self, vocab: int, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.lm_head = torch.nn.Linear(1, vocab, bias=False, device="meta", dtype=dtype)

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.lm_head


def test_retention_batch_fits_the_cpu_budget() -> None:
    from ragforget.evaluation.retention.suites import fit_batch_to_memory

    # 768 MiB over 1024 tokens x vocabulary x (logit bytes + 4 for the fp32 log-softmax) per row.
    assert fit_batch_to_memory(_Head(49152), 16) == 2                    # SmolLM2, bf16: 302 MB a row
    assert fit_batch_to_memory(_Head(49152), "auto") == 2
    assert fit_batch_to_memory(_Head(24576, torch.float32), "auto") == 4  # 201 MB a row
    assert fit_batch_to_memory(_Head(24576, torch.float32), 3) == 3       # an explicit size below the cap stays
    assert fit_batch_to_memory(_Head(262144), 16) == 1                   # Gemma 3: 16 rows were OOM-killed at 23 GB
    assert fit_batch_to_memory(_Head(10**9), "auto") == 1


def test_retention_batch_grows_with_free_gpu_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from ragforget.evaluation.retention import suites

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * 2**30, 141 * 2**30))
    assert suites.logit_budget(torch.device("cuda")) == 40 * 2**30
    monkeypatch.setattr(suites, "logit_budget", lambda device: 40 * 2**30)
    assert suites.fit_batch_to_memory(_Head(151936), "auto") == 46      # Qwen2.5: 40 GiB / 933 MB a row
