"""self_synth's general-data source: the reconstructed set, synthesized into the cache on first use.

It plugs into replay's mixing transform like any other general-data source (conf/method/self_synth.yaml),
so self_synth and public-data replay differ only in where the general examples come from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig

from ragforget.data.general import GeneralDataSource, SourceReport
from ragforget.errors import keys_under, require
from ragforget.synth.committee import Member
from ragforget.synth.judging import SCORE_RANGE
from ragforget.synth.synthesizer import (
    GENERAL_FILE,
    STATS_FILE,
    InstructionSettings,
    JudgeSettings,
    ResponseSettings,
    Synthesizer,
)
from ragforget.utils.config import plain
from ragforget.utils.device import check_device, resolve_device
from ragforget.utils.instantiate import instantiate
from ragforget.utils.io import read_json
from ragforget.utils.templates import check_placeholders

Settings = TypeVar("Settings")


class SynthesizedGeneralData(GeneralDataSource):
    """Reconstructed general data (Ding & Wang 2025) as a general-data source.

    ``instruction_model`` and each ``committee`` value are model configs (conf/model schema); a
    committee member set to null is left out, which is how the ablation configs shrink it.
    ``oversample`` is what ``instructions.count`` is derived from in the config (samples per general
    example the mix needs); it is checked here and named when the set comes out too small.
    """

    # The key replay's too-small error names, relative to this source's node.
    config_key = "instructions.count"
    config_key_relative = True

    def __init__(self, instruction_model: Mapping[str, Any] | DictConfig,
                 committee: Mapping[str, Mapping[str, Any] | None] | DictConfig,
                 instructions: Mapping[str, Any] | DictConfig, responses: Mapping[str, Any] | DictConfig,
                 judge: Mapping[str, Any] | DictConfig, oversample: float, seed: int, device: str,
                 generator: Mapping[str, Any] | DictConfig) -> None:
        members = {name: config for name, config in (plain(committee) or {}).items() if config is not None}
        require(bool(members), "committee", "has no members", "list at least one model config", relative=True)
        for name, config in members.items():
            require(isinstance(config, Mapping) and "source" in config, f"committee.{name}",
                    "is not a model config (no 'source')", "use a conf/model/*.yaml entry", relative=True)
        instruction_config = plain(instruction_model)
        require(bool(instruction_config.get("chat_template")), "model.chat_template",
                "self_synth samples instructions from the chat template's prefix, so the model must be an "
                "instruct model with a chat template")
        require(isinstance(oversample, (int, float)) and not isinstance(oversample, bool) and oversample > 0,
                "oversample", f"must be a number > 0, got {oversample!r}", relative=True)
        with keys_under("generator", relative=True):  # its own sub-config, detached from this node
            generate = instantiate(generator)
        require(callable(generate), "generator", f"is a {type(generate).__name__}, not callable", relative=True)
        self.grow_hint = (f"sample more instructions (raise oversample, now {oversample:g}, or set "
                          "instructions.count), or lower judge.threshold; the dataset's stats.json says where "
                          "rows were lost")
        self.synthesizer = Synthesizer(
            instruction_model=Member(str(instruction_config.get("name", "model")), instruction_config),
            committee=[Member(name, config) for name, config in members.items()],
            instructions=_settings(InstructionSettings, plain(instructions), "instructions"),
            responses=_settings(ResponseSettings, plain(responses), "responses"),
            judge=_settings(JudgeSettings, plain(judge), "judge"),
            seed=int(seed), device=resolve_device(check_device(device)), generate=generate)

    def materialize(self, cache_dir: Path) -> Path:
        return self.synthesizer.build(cache_dir) / GENERAL_FILE

    def report(self, path: Path) -> SourceReport:
        stats = read_json(path.parent / STATS_FILE)
        return SourceReport({f"self_synth/{name}": float(value) for name, value in stats.items()}, path.parent)


SIZE_FIELDS = ("count", "per_model", "max_new_tokens", "batch_size")


def _settings(cls: type[Settings], values: Mapping[str, Any], key: str) -> Settings:
    """``cls`` from a config mapping, each bad or unknown field reported under ``key`` (relative to the source)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown, missing = sorted(set(values) - names), sorted(names - set(values))
    require(not unknown, f"{key}.{unknown[0] if unknown else ''}", "is not a setting", f"known: {sorted(names)}",
            relative=True)
    require(not missing, f"{key}.{missing[0] if missing else ''}", "is missing", relative=True)
    for name in names & set(SIZE_FIELDS):
        require(isinstance(values[name], int) and values[name] > 0, f"{key}.{name}",
                f"must be a positive integer, got {values[name]!r}", relative=True)
    if "temperature" in names:
        require(values["temperature"] > 0, f"{key}.temperature", f"must be > 0, got {values['temperature']}",
                relative=True)
        require(0 < values["top_p"] <= 1, f"{key}.top_p", f"must be in (0, 1], got {values['top_p']}", relative=True)
    if "threshold" in names:
        low, high = SCORE_RANGE
        threshold = values["threshold"]
        require(threshold is None or low <= threshold <= high, f"{key}.threshold",
                f"must be null or in [{low:g}, {high:g}], got {threshold}", relative=True)
    if "rubric" in names:
        check_placeholders(str(values["rubric"]), {"instruction", "response"}, f"{key}.rubric", relative=True)
    return cls(**values)
