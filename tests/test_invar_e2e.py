"""Invar-RAG end to end on the tiny model: stage 1 (retriever adapter) then stage 2 (generator), and reuse."""

from __future__ import annotations

from pathlib import Path

from helpers import run_of, tiny_config
from mlflow.tracking import MlflowClient

from ragforget.invar.adapter import PROVENANCE_FILE, adapter_hash
from ragforget.pipeline import run_job
from ragforget.utils.io import read_json

SMALL_STAGE1 = ["~retriever.compare.dense", "retriever.impl.stage1.max_examples=16", "retriever.impl.stage1.max_steps=2",
                "retriever.impl.stage1.align=0", "retriever.impl.max_length=32"]


def test_both_stages_then_stage_two_alone_reusing_the_adapter(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "retriever=invar", *SMALL_STAGE1)
    first = run_job(cfg, tmp_path / "both")
    run = run_of(cfg, tmp_path / "both")
    client = MlflowClient(tracking_uri=cfg.logger.tracking_uri)
    assert run.info.status == "FINISHED" and run.data.tags["retriever"] == "invar"
    assert "odqa/acc" in first and "retention/macro_avg" in first
    for name in ("invar", "bm25"):  # one table: the trained retriever beside BM25 on the same questions
        assert {f"retrieval/{name}/recall_at_{k}" for k in (1, 3, 5)} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"retriever_adapter", "checkpoint", "retrieval_comparison.md"} <= artifacts  # both adapters
    adapter_dir = Path(client.download_artifacts(run.info.run_id, "retriever_adapter", str(tmp_path / "dl")))
    provenance = read_json(adapter_dir / PROVENANCE_FILE)
    assert run.data.tags["retriever_run_id"] == provenance["run_id"]  # this run, or the one that trained it
    assert adapter_hash(adapter_dir) == provenance["adapter_hash"]  # stage 2 left it as stage 1 saved it

    # Stage 2 alone, from the logged stage-1 adapter: nothing is retrained, the adapter is untouched.
    uri = f"runs:/{run.info.run_id}/retriever_adapter"
    cfg = tiny_config(tmp_path, "retriever=invar", *SMALL_STAGE1, f"retriever.impl.adapter={uri}",
                      "method=selfaug")
    second = run_job(cfg, tmp_path / "stage2")
    reuse = run_of(cfg, tmp_path / "stage2")
    assert "time/retriever_train_s" not in second
    assert reuse.data.tags["retriever_run_id"] == provenance["run_id"]
    assert reuse.data.metrics["retrieval/invar/recall_at_5"] == run.data.metrics["retrieval/invar/recall_at_5"]
    used = Path(MlflowClient(tracking_uri=cfg.logger.tracking_uri).download_artifacts(
        reuse.info.run_id, "retriever_adapter", str(tmp_path / "dl2")))
    assert adapter_hash(used) == provenance["adapter_hash"]
