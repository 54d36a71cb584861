"""A report's tables as markdown, LaTeX and CSV (rows = metrics, columns = methods, like SelfAug's Table 1)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence

from ragforget.report.aggregate import Table, format_cell
from ragforget.report.spec import PublishedTable, ReportSpec
from ragforget.utils.markdown import markdown_table


def regenerated_body(spec: ReportSpec, table: Table, best: dict[str, set[str]], bold: str,
                     escape: Callable[[str], str] = str) -> list[list[str]]:
    """Formatted (and escaped) cells; the best per row wrapped in ``bold``, a format string with one slot."""
    body = []
    for row in spec.rows:
        cells = [escape(row.label)]
        for column in spec.columns:
            text = escape(format_cell(table[row.label][column.label], row))
            cells.append(bold.format(text) if column.label in best[row.label] else text)
        body.append(cells)
    return body


def published_body(published: PublishedTable) -> list[list[str]]:
    return [[label] + [f"{v:.2f}" for v in values] for label, values in published.rows.items()]


def markdown(spec: ReportSpec, table: Table, best: dict[str, set[str]], notes: Sequence[str],
             comparisons: Sequence[str] = ()) -> str:
    labels = [c.label for c in spec.columns]
    excluded = f" ({', '.join(spec.exclude_from_best)} excluded)" if spec.exclude_from_best else ""
    lines = [f"## {spec.title}", "",
             f"Regenerated from MLflow experiment `{spec.experiment}`: mean ± std [95% t interval of the mean] "
             f"over seeds {', '.join(spec.seeds)} (a lone seed shows its value). Best mean per row in bold{excluded}.",
             "", *markdown_table(["metric", *labels], regenerated_body(spec, table, best, "**{}**"))]
    if spec.published is not None:
        lines += ["", f"### Published, not regenerated: {spec.published.source}", "",
                  *markdown_table(["metric", *spec.published.columns], published_body(spec.published))]
    if comparisons:
        lines += ["", *comparisons]
    lines += ["", "### Notes", "", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text.replace("±", r"$\pm$").replace("–", "--")


def _latex_tabular(header: Sequence[str], body: Sequence[Sequence[str]], caption: str) -> list[str]:
    return [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
            " & ".join(_latex_escape(h) for h in header) + r" \\", r"\midrule",
            *[" & ".join(cells) + r" \\" for cells in body],
            r"\bottomrule", r"\end{tabular}", rf"\caption{{{_latex_escape(caption)}}}", r"\end{table}"]


def latex(spec: ReportSpec, table: Table, best: dict[str, set[str]]) -> str:
    labels = [c.label for c in spec.columns]
    body = regenerated_body(spec, table, best, r"\textbf{{{}}}", escape=_latex_escape)
    lines = _latex_tabular(["metric", *labels], body,
                           f"{spec.title}: regenerated from MLflow, mean ± std over seeds {', '.join(spec.seeds)}.")
    if spec.published is not None:
        published = [[_latex_escape(c) for c in cells] for cells in published_body(spec.published)]
        lines += ["", *_latex_tabular(["metric", *spec.published.columns], published,
                                      f"Published, not regenerated: {spec.published.source}.")]
    return "\n".join(lines) + "\n"


def csv_text(spec: ReportSpec, table: Table) -> str:
    """Long format, one line per (metric, column): unrounded, for plotting elsewhere."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["metric", "row", "column", "mean", "std", "lo", "hi", "n"])
    for row in spec.rows:
        for column in spec.columns:
            cell = table[row.label][column.label]
            spread = ["" if cell is None or value is None or math.isnan(value) else value
                      for value in ((cell.std, cell.lo, cell.hi) if cell else (None,) * 3)]
            writer.writerow([row.metric, row.label, column.label, "" if cell is None else cell.mean, *spread,
                             0 if cell is None else cell.n])
    return out.getvalue()
