"""Replay: round(ratio * N) of the N RAG examples are replaced by general ones; N stays the same."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import compose_config

from ragforget.data.general import GeneralDataSource, PackagedShareGPT
from ragforget.data.rag_examples import TrainingExample
from ragforget.errors import ConfigError
from ragforget.methods.base import Method, MethodContext
from ragforget.methods.build import build_method
from ragforget.methods.replay import MixGeneralData, general_count
from ragforget.utils.io import write_jsonl


class ListSource(GeneralDataSource):
    """A general-data source serving fixed rows; counts how often it is materialized."""

    def __init__(self, n_rows: int) -> None:
        self.rows = [{"id": f"g{i}", "prompt": f"general prompt {i}", "response": f"general answer {i}"}
                     for i in range(n_rows)]
        self.calls = 0

    def materialize(self, cache_dir: Path) -> Path:
        self.calls += 1
        return write_jsonl(Path(cache_dir) / "general" / "list.jsonl", self.rows)


def rag_examples(n: int) -> list[TrainingExample]:
    return [TrainingExample(id=f"rag-{i}", messages=[{"role": "user", "content": f"question {i}"}],
                            plain_text=f"question {i}\nAnswer:", target=f"answer {i}", golden_answers=[f"answer {i}"])
            for i in range(n)]


def context(tmp_path: Path, seed: int = 0) -> MethodContext:
    return MethodContext(model_path="unused", tokenizer=None, chat_template=True, dtype="float32",
                         cache_dir=tmp_path, seed=seed)


def test_ratio_replaces_that_share_and_keeps_n(tmp_path: Path) -> None:
    examples = rag_examples(10)
    ctx = context(tmp_path)
    mixed = MixGeneralData(ListSource(20), ratio=0.3)(examples, ctx)
    # N = 10, round(0.3 * 10) = 3 general examples, 10 - 3 = 7 RAG examples kept.
    general = [ex for ex in mixed if ex.source == "general"]
    rag = [ex for ex in mixed if ex.source == "rag"]
    assert (len(mixed), len(general), len(rag)) == (10, 3, 7)
    assert ctx.metrics["replay/general_examples"] == 3.0
    assert len({ex.id for ex in rag}) == 7 and {ex.id for ex in rag} <= {ex.id for ex in examples}
    assert len({ex.id for ex in general}) == 3  # drawn without replacement
    one = general[0]
    index = one.id.removeprefix("general:g")
    assert one.messages == [{"role": "user", "content": f"general prompt {index}"}]
    assert one.target == f"general answer {index}" and one.golden_answers == []
    assert [ex.id for ex in examples] == [f"rag-{i}" for i in range(10)]  # the input list is untouched


def test_same_seed_same_mix_other_seed_other_mix(tmp_path: Path) -> None:
    replay = MixGeneralData(ListSource(20), ratio=0.3)
    ids = [[ex.id for ex in replay(rag_examples(10), context(tmp_path, seed))] for seed in (0, 0, 1)]
    assert ids[0] == ids[1]
    assert ids[0] != ids[2]


def test_ratio_zero_is_a_no_op(tmp_path: Path) -> None:
    source = ListSource(0)  # never read: ratio 0 needs no general data
    ctx = context(tmp_path)
    mixed = MixGeneralData(source, ratio=0)(rag_examples(10), ctx)
    assert [ex.id for ex in mixed] == [f"rag-{i}" for i in range(10)]
    assert source.calls == 0 and ctx.metrics["replay/general_examples"] == 0.0


def test_ratio_one_is_all_general(tmp_path: Path) -> None:
    mixed = MixGeneralData(ListSource(10), ratio=1.0)(rag_examples(10), context(tmp_path))
    assert sorted(ex.id for ex in mixed) == sorted(f"general:g{i}" for i in range(10))


def test_rounding() -> None:
    assert general_count(10, 0.3) == 3   # 0.3 * 10 = 3.0000000000000004
    assert general_count(10, 0.25) == 3  # 2.5 rounds up (Python's round would give 2)
    assert general_count(7, 0.1) == 1    # 0.7
    assert general_count(4, 0.1) == 0    # 0.4
    assert general_count(400, 0.1) == 40


@pytest.mark.parametrize("ratio", [-0.1, 1.5, "0.3", True])
def test_bad_ratio_names_the_key(ratio: object) -> None:
    with pytest.raises(ConfigError) as error:
        MixGeneralData(ListSource(5), ratio=ratio)  # type: ignore[arg-type]
    assert error.value.key == "ratio" and error.value.relative  # its own parameter: the config test adds the node
    value = f"'{ratio}'" if isinstance(ratio, str) else str(ratio).lower()  # '0.3' stays a string, True is true
    with pytest.raises(ConfigError) as error:
        build_method(compose_config(["method=replay", f"method.transforms.replay.ratio={value}"]).method)
    assert error.value.key == "method.transforms.replay.ratio"


def test_not_a_source_names_the_source_and_general_data() -> None:
    with pytest.raises(ConfigError, match="set general_data=<source>") as error:
        MixGeneralData(source={"path": "x"}, ratio=0.1)  # type: ignore[arg-type]
    assert error.value.key == "source" and error.value.relative


def test_source_without_enough_rows_names_general_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'general_data'.*has 0 usable row\(s\); replay needs 3"):
        MixGeneralData(ListSource(0), ratio=0.3)(rag_examples(10), context(tmp_path))
    with pytest.raises(ConfigError, match=r"'general_data'.*has 2 usable row\(s\); replay needs 3.*lower the "
                                          r"transform's ratio"):
        MixGeneralData(ListSource(2), ratio=0.3)(rag_examples(10), context(tmp_path))


class CountedSource(ListSource):
    """A source built inside the transform's node, whose size is set by its own ``instructions.count``."""

    config_key = "instructions.count"
    config_key_relative = True


def test_a_source_too_small_is_named_by_its_own_key_under_the_transform(tmp_path: Path) -> None:
    """At work, the transform's relative key goes under its source, then under the method's node."""
    method = Method("m", transforms={"self_synth": MixGeneralData(CountedSource(2), ratio=0.3)}, config_key="method")
    with pytest.raises(ConfigError, match="has 2 usable row") as error:
        method.transform_data(rag_examples(10), context(tmp_path))
    assert error.value.key == "method.transforms.self_synth.source.instructions.count"


def test_config_wires_the_source_and_ratio() -> None:
    method = build_method(compose_config(["method=replay", "method.transforms.replay.ratio=0.3"]).method)
    replay = method.transforms["replay"]
    assert isinstance(replay, MixGeneralData) and replay.ratio == 0.3
    assert isinstance(replay.source, PackagedShareGPT)
    combined = build_method(compose_config(["method=[selfaug,replay]", "method.name=selfaug+replay"]).method)
    assert set(combined.terms) == {"selfaug"} and set(combined.transforms) == {"replay"}
    assert combined.name == "selfaug+replay"
