"""The results page: a report folder copied into the repository, its index, and README blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragforget.errors import ConfigError
from ragforget.report.publish import embed_pages, publish


def report_folder(root: Path, name: str, summary: str) -> Path:
    folder = root / "reports" / name
    folder.mkdir(parents=True)
    (folder / "summary.md").write_text(summary, encoding="utf-8")
    (folder / "table.md").write_text(summary + "\n### Notes\n", encoding="utf-8")
    (folder / "tradeoff.png").write_bytes(b"png")
    return folder


def test_publish_copies_indexes_and_embeds_between_markers(tmp_path: Path) -> None:
    results = tmp_path / "docs" / "results"
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:table1 -->\nold\n<!-- /results:table1 -->\nafter\n", encoding="utf-8")
    other = tmp_path / "OTHER.md"
    other.write_text("no markers here\n", encoding="utf-8")
    publish(report_folder(tmp_path, "table1", "## Table 1\n| a |\n"), results, embed_pages([str(readme), str(other)]))
    publish(report_folder(tmp_path, "alpha", "## Alpha\n"), results)

    assert sorted(p.name for p in (results / "table1").iterdir()) == ["summary.md", "table.md", "tradeoff.png"]
    index = (results / "README.md").read_text(encoding="utf-8")
    assert index.index("## Alpha") < index.index("## Table 1")  # every published report, in name order
    assert "[table1/](table1/table.md)" in index
    assert readme.read_text(encoding="utf-8") == (
        "intro\n<!-- results:table1 -->\n## Table 1\n| a |\n<!-- /results:table1 -->\nafter\n")
    assert other.read_text(encoding="utf-8") == "no markers here\n"

    # A new report replaces the old copy whole: no stale plot survives, the block changes again.
    new = tmp_path / "again"
    folder = report_folder(new, "table1", "## Table 1, re-run\n")
    (folder / "tradeoff.png").unlink()
    publish(folder, results, [readme])
    assert not (results / "table1" / "tradeoff.png").exists()
    assert "## Table 1, re-run\n<!-- /results:table1 -->" in readme.read_text(encoding="utf-8")
    assert not list(results.glob(".*"))  # no staging folder left behind


def test_publish_refuses_missing_pages_and_unclosed_blocks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="report.embed_in.*nowhere.md not found"):
        embed_pages([str(tmp_path / "nowhere.md")])
    page = tmp_path / "README.md"
    page.write_text("<!-- results:t -->\nno end\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no '<!-- /results:t -->'"):
        publish(report_folder(tmp_path, "t", "## T\n"), tmp_path / "results", [page])
    assert page.read_text(encoding="utf-8") == "<!-- results:t -->\nno end\n"
