"""A new method is one Python file plus one YAML file: the README's example, run end to end as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import ROOT, TINY_TRAIN, compose_config, run_of

import ragforget.methods
from ragforget.errors import ConfigError
from ragforget.pipeline import run_job

SECTION = "### Add a method"


def readme_files() -> dict[str, str]:
    """The fenced blocks of the README's 'Add a method' section, by the path named in their first line."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(SECTION):].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:python|yaml)\n# (\S+)\n(.*?)```", section, flags=re.S)
    return {path: body for path, body in blocks}


def test_readme_method_trains_and_reports_its_term(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = readme_files()
    assert sorted(files) == ["conf/method/answer_entropy.yaml", "src/ragforget/methods/answer_entropy.py"]
    # The two files go into a scratch copy of where the README puts them: the package's methods folder is
    # extended by a temporary one, the config search path by a temporary conf/.
    code_dir, conf_dir = tmp_path / "methods", tmp_path / "conf"
    code_dir.mkdir()
    (conf_dir / "method").mkdir(parents=True)
    (code_dir / "answer_entropy.py").write_text(files["src/ragforget/methods/answer_entropy.py"], encoding="utf-8")
    (conf_dir / "method" / "answer_entropy.yaml").write_text(files["conf/method/answer_entropy.yaml"],
                                                             encoding="utf-8")
    monkeypatch.setattr(ragforget.methods, "__path__", [*ragforget.methods.__path__, str(code_dir)])
    search = f"hydra.searchpath=[file://{conf_dir}]"

    cfg = compose_config([*TINY_TRAIN, f"paths.output_dir={tmp_path / 'out'}", search, "method=answer_entropy"])
    metrics = run_job(cfg, tmp_path / "job")
    run = run_of(cfg, tmp_path / "job")
    assert run.info.status == "FINISHED" and run.data.tags["method"] == "answer_entropy"
    history = run.data.metrics
    assert history["train/answer_entropy"] > 0  # logged by the loop under the term's name, times its weight
    assert "odqa/acc" in metrics

    bad = compose_config([*TINY_TRAIN, f"paths.output_dir={tmp_path / 'bad'}", search, "method=answer_entropy",
                          "method.terms.answer_entropy.weight=-1"])
    with pytest.raises(ConfigError, match="'method.terms.answer_entropy.weight': must be >= 0"):
        run_job(bad, tmp_path / "bad_job")
