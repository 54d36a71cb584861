"""Every conf/dataset file composes to the shape the pipeline consumes and instantiates its classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf.errors import MissingMandatoryValue

from ragforget.data.corpus import LocalJsonlCorpus, PackagedWikiCorpus
from ragforget.data.hub import HubQA
from ragforget.data.squad import SquadOpen, SquadShiftsWikiOpen

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPECTED = {
    "squad_open": (SquadOpen, "train", "test"),
    "squadshifts_wiki_open": (SquadShiftsWikiOpen, None, "test"),
    "nq_open": (HubQA, "train", "test"),
    "triviaqa": (HubQA, "train", "test"),
    "popqa": (HubQA, None, "test"),
}


def compose_dataset(name: str, overrides: list[str] | None = None) -> Any:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(overrides=[f"+dataset={name}", *(overrides or [])]).dataset


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dataset_config_shape(name: str) -> None:
    cls, train_split, eval_split = EXPECTED[name]
    cfg = compose_dataset(name)
    assert set(cfg) == {"name", "qa", "corpus", "train_split", "eval_split"}
    assert cfg.name == name
    assert (cfg.train_split, cfg.eval_split) == (train_split, eval_split)
    qa = instantiate(cfg.qa)
    assert isinstance(qa, cls)
    split_names = set(qa.fractions) if isinstance(qa, SquadOpen) else (
        set(qa.splits) if isinstance(qa, HubQA) else {"test"})
    assert eval_split in split_names and (train_split is None or train_split in split_names)


def test_squad_configs_share_one_corpus() -> None:
    squad, shifts = compose_dataset("squad_open"), compose_dataset("squadshifts_wiki_open")
    assert squad.corpus == shifts.corpus
    corpus = instantiate(squad.corpus)
    assert isinstance(corpus, PackagedWikiCorpus) and corpus.heldout_summaries == 300
    qa = instantiate(squad.qa)
    assert qa.fractions == {"train": 0.7, "validation": 0.1, "test": 0.2} and qa.seed == 0


def test_hub_corpus_path_must_be_set(tmp_path: Path) -> None:
    with pytest.raises(MissingMandatoryValue, match="path"):
        instantiate(compose_dataset("nq_open").corpus)
    corpus = instantiate(compose_dataset("nq_open", [f"dataset.corpus.path={tmp_path / 'wiki.jsonl'}"]).corpus)
    assert isinstance(corpus, LocalJsonlCorpus)


def test_split_seed_override_changes_cache_dir() -> None:
    base = instantiate(compose_dataset("squad_open").qa)
    other = instantiate(compose_dataset("squad_open", ["dataset.qa.seed=1"]).qa)
    assert base.directory(Path("/c")) != other.directory(Path("/c"))
