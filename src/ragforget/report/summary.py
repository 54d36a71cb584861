"""The end-of-run summary: each headline metric before (base) and after fine-tuning."""

from __future__ import annotations

from collections.abc import Mapping

from ragforget.utils.markdown import markdown_table


def _row_names(metrics: Mapping[str, float]) -> list[str]:
    """Headline rows: ODQA, retrieval recall, every retention task's primary score, macro average, shift.

    A run without them (``stage=synthesize``) shows every metric it has.
    """
    odqa = [k for k in ("odqa/em", "odqa/f1", "odqa/acc") if k in metrics]
    recall = sorted(k for k in metrics if k.startswith("retrieval/"))
    tasks = sorted(k for k in metrics if k.startswith("retention/") and k.count("/") == 1
                   and not k.endswith(("macro_avg", "_macro_avg")))
    tail = [k for k in ("retention/macro_avg", "retention/delta_macro_avg", "shift/kl", "time/train_s",
                        "time/eval_s") if k in metrics]
    return odqa + recall + tasks + tail or sorted(metrics)


def summary_table(metrics: Mapping[str, float], title: str) -> str:
    """A markdown table: metric | base | this run | delta (base columns blank where not measured)."""
    rows = []
    for name in _row_names(metrics):
        value = metrics[name]
        base = metrics.get(f"base/{name}")
        if base is None:
            rows.append([name, "", f"{value:.4f}", ""])
        else:
            rows.append([name, f"{base:.4f}", f"{value:.4f}", f"{value - base:+.4f}"])
    return "\n".join([f"### {title}", "", *markdown_table(["metric", "base", "this run", "delta"], rows)])
