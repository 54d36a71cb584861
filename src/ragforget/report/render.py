"""A report's tables as markdown, LaTeX and CSV (rows = metrics, columns = methods, like SelfAug's Table 1).

pandas renders them: ``to_markdown`` (tabulate), ``Styler.to_latex`` (cells, headers and captions escaped,
the best per row in ``\\textbf``) and ``to_csv``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ragforget.report.aggregate import cell_text
from ragforget.report.spec import PublishedTable, ReportSpec


def wide(spec: ReportSpec, table: pd.DataFrame, values: Sequence[object]) -> pd.DataFrame:
    """``values``, one per line of the long ``table``, as rows = metrics by columns = the spec's columns."""
    return (table.assign(value=list(values)).pivot(index="row", columns="column", values="value")
            .reindex(index=[row.label for row in spec.rows], columns=[column.label for column in spec.columns])
            .rename_axis(index="metric", columns=None))


def cell_texts(spec: ReportSpec, table: pd.DataFrame) -> pd.DataFrame:
    decimals = {row.label: row.decimals for row in spec.rows}
    return wide(spec, table, [cell_text(line.mean, line.std, line.lo, line.hi, decimals[line.row])
                              for line in table.itertuples()])


def published_texts(published: PublishedTable) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(published.rows, orient="index", columns=published.columns)
    return frame.rename_axis("metric").map("{:.2f}".format)


def markdown_table(frame: pd.DataFrame) -> str:
    """A frame of texts as a pipe table: the index left-aligned, the cells right-aligned and as given."""
    return frame.to_markdown(colalign=("left", *["right"] * frame.shape[1]), disable_numparse=True)


def summary(spec: ReportSpec, table: pd.DataFrame, best: pd.Series, comparisons: Sequence[str] = ()) -> str:
    """The title, the table and the paired differences: what the results page and the README show."""
    texts = cell_texts(spec, table)
    shown = texts.mask(wide(spec, table, best).astype(bool), "**" + texts + "**")
    excluded = f" ({', '.join(spec.exclude_from_best)} excluded)" if spec.exclude_from_best else ""
    lines = [f"## {spec.title}", "",
             f"Regenerated from MLflow experiment `{spec.experiment}`: mean ± std [95% t interval of the mean] "
             f"over seeds {', '.join(spec.seeds)} (a lone seed shows its value). Best mean per row in bold{excluded}.",
             "", markdown_table(shown)]
    if comparisons:
        lines += ["", *comparisons]
    return "\n".join(lines) + "\n"


def markdown(spec: ReportSpec, table: pd.DataFrame, best: pd.Series, notes: Sequence[str],
             comparisons: Sequence[str] = ()) -> str:
    """The summary, the paper's published table beside it, and the notes (missing runs, models, ...)."""
    lines = [summary(spec, table, best, comparisons)]
    if spec.published is not None:
        lines += [f"### Published, not regenerated: {spec.published.source}", "",
                  markdown_table(published_texts(spec.published)), ""]
    lines += ["### Notes", "", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def _latex_symbols(text: str) -> str:
    return text.replace("±", r"$\pm$").replace("–", "--")


def latex_escape(text: str) -> str:
    """``text`` escaped as Styler escapes a cell (Styler leaves a caption as given)."""
    one_cell = pd.DataFrame([[text]]).style.hide(axis="index").hide(axis="columns").format(escape="latex")
    return _latex_symbols(one_cell.to_string().strip())


def latex_table(frame: pd.DataFrame, caption: str, bold: pd.DataFrame | None = None) -> str:
    """A frame of texts (its index the first column) as a booktabs table, ``bold`` cells in ``\\textbf``."""
    styler = (frame.reset_index().style.hide(axis="index")
              .format(_latex_symbols, escape="latex").format_index(escape="latex", axis="columns"))
    if bold is not None:
        styler = styler.apply(lambda _: np.where(bold, "textbf:--rwrap;", ""), axis=None, subset=list(frame.columns))
    return styler.to_latex(hrules=True, column_format="l" + "r" * frame.shape[1], position="t",
                           position_float="centering", caption=latex_escape(caption))


def latex(spec: ReportSpec, table: pd.DataFrame, best: pd.Series) -> str:
    text = latex_table(cell_texts(spec, table),
                       f"{spec.title}: regenerated from MLflow, mean ± std over seeds {', '.join(spec.seeds)}.",
                       bold=wide(spec, table, best).astype(bool))
    if spec.published is not None:
        text += "\n" + latex_table(published_texts(spec.published),
                                   f"Published, not regenerated: {spec.published.source}.")
    return text


def csv_text(table: pd.DataFrame) -> str:
    """Long format, one line per (metric, column): unrounded, for plotting elsewhere."""
    return table.to_csv(index=False, lineterminator="\n")
