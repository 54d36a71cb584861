"""Multi-process training: trainer=ddp for real (2 CPU processes, gloo) through run.py, and the GPU configs.

Every Hydra job must stay one output folder and one MLflow run however many processes train it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import hydra
import pytest
import torch
from helpers import CONF_DIR, TINY, compose_config, run_cli, runs_in
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy
from omegaconf import DictConfig, open_dict

from ragforget.training.distributed import (
    HydraJobDDPStrategy,
    HydraJobLauncher,
    global_rank,
    hydra_job_command,
    worker_command,
)
from ragforget.training.train import WholeWeights

ROOT = Path(__file__).resolve().parents[1]


def _job_folder_checks(folder: Path) -> None:
    """Rank 0 wrote the job's files once; the worker trained in this folder and logged to its own file."""
    assert (folder / "checkpoint" / "adapter").is_dir()
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("config.yaml")) == [
        ".hydra/config.yaml", "checkpoint/config.yaml", "config.yaml"]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (folder / "run_rank1.log").read_text()


def test_ddp_trains_two_processes_into_one_folder_and_one_mlflow_run(tmp_path: Path) -> None:
    run_cli("trainer=ddp", f"paths.output_dir={tmp_path}", *TINY, timeout=600)
    (run,) = runs_in(tmp_path)
    assert run.info.status == "FINISHED" and "odqa/acc" in run.data.metrics
    assert run.data.params["trainer.strategy._target_"] == "ragforget.training.distributed.HydraJobDDPStrategy"
    (folder,) = tmp_path.glob("runs/*/*")
    _job_folder_checks(folder)
    assert not (tmp_path / "multirun").exists()


def test_ddp_under_multirun_starts_workers_for_each_job_only(tmp_path: Path) -> None:
    """Lightning's own launcher would restart the whole sweep in every worker, and its second job would
    reuse the first job's process group (LOCAL_RANK left set): this sweep would fail or multiply runs."""
    run_cli("--multirun", "seed=0,1", "trainer=ddp", f"paths.output_dir={tmp_path}", *TINY, timeout=600)
    runs = runs_in(tmp_path)
    assert sorted(r.info.run_name for r in runs) == [f"sft-tiny_random-squad_open-s{s}" for s in (0, 1)]
    assert all(r.info.status == "FINISHED" and "odqa/acc" in r.data.metrics for r in runs)
    folders = sorted(p for p in tmp_path.glob("multirun/*/*") if p.is_dir())
    assert [p.name for p in folders] == [f"{n}-sft-tiny_random-squad_open-s{n}" for n in (0, 1)]
    for folder in folders:
        _job_folder_checks(folder)
    assert not (tmp_path / "runs").exists()  # no worker fell back to hydra.run.dir


@pytest.mark.parametrize(("environ", "rank"), [
    ({}, 0),
    ({"LOCAL_RANK": "0"}, 0),
    ({"LOCAL_RANK": "1"}, 1),                       # a worker started by Lightning's launcher
    ({"RANK": "3", "LOCAL_RANK": "1"}, 3),          # torchrun
    ({"SLURM_PROCID": "2"}, 2),                     # srun
    ({"RANK": "5", "SLURM_PROCID": "1"}, 5),
    ({"SLURM_PROCID": "0", "LOCAL_RANK": "1"}, 1),  # a worker that inherited an interactive srun shell's rank
    ({"RANK": "", "LOCAL_RANK": ""}, 0),
])
def test_global_rank_from_the_environment(environ: dict[str, str], rank: int) -> None:
    assert global_rank(environ) == rank


def test_global_rank_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert global_rank() == 1


def test_worker_command_is_the_job_alone_with_its_folder_quoted() -> None:
    overrides = ["trainer=ddp", "eval.retention.tasks=[wiki_ppl]", "run_name=a b,c", "seed=1"]
    job_dir = "/tmp/out dir/it's,[x]=y/0-sft"
    command = worker_command(["python", "/abs/run.py"], overrides, job_dir, "run_rank1", "config")
    assert command[:4] == ["python", "/abs/run.py", "--config-name", "config"]
    assert command[4:8] == overrides  # one argument each, as the user's shell handed them to Hydra
    run_dir = next(arg for arg in command if arg.startswith("hydra.run.dir="))
    assert OverridesParser.create().parse_override(run_dir).value() == job_dir
    assert {"hydra.output_subdir=null", "hydra.job.chdir=false", "hydra.job.name=run_rank1"} <= set(command)


@pytest.fixture
def multirun_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """HydraConfig as in job 1 of ``run.py --multirun seed=0,1 trainer=ddp``; yields the job's folder."""
    job_dir = tmp_path / "multirun" / "1-sft"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["seed=1", "trainer=ddp"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(job_dir)
        cfg.hydra.runtime.cwd = str(ROOT)
        cfg.hydra.job.name = "run"
    monkeypatch.setattr(sys, "argv", ["run.py", "--multirun", "seed=0,1", "trainer=ddp"])
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None)  # as under `python run.py`, not pytest
    HydraConfig.instance().set_config(cfg)
    try:
        yield job_dir
    finally:
        HydraConfig.instance().cfg = None


def test_hydra_job_command_runs_this_job_not_the_sweep(multirun_job: Path) -> None:
    command, cwd = hydra_job_command(local_rank=1)
    assert command[:2] == [sys.executable, str(ROOT / "run.py")] and cwd == str(ROOT)
    assert "--multirun" not in command and "-m" not in command and "seed=0,1" not in command
    assert "seed=1" in command and "trainer=ddp" in command
    assert f"hydra.run.dir='{multirun_job}'" in command and "hydra.job.name=run_rank1" in command


def test_ddp_config_builds_lightnings_ddp_with_the_hydra_job_launcher() -> None:
    cfg = compose_config(["trainer=ddp"])
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False)
    strategy = trainer.strategy
    assert isinstance(strategy, HydraJobDDPStrategy) and isinstance(strategy, DDPStrategy)
    assert isinstance(strategy.launcher, HydraJobLauncher)
    assert strategy.process_group_backend == "gloo" and strategy.num_processes == 2


def _strategy(trainer: str) -> DictConfig:
    strategy = compose_config([f"trainer={trainer}"]).trainer.strategy
    assert isinstance(strategy, DictConfig)
    return strategy


def test_fsdp_config_composes_to_lightnings_fsdp_strategy() -> None:
    strategy_cfg = _strategy("fsdp")
    assert issubclass(hydra.utils.get_class(strategy_cfg._target_), FSDPStrategy)
    strategy = hydra.utils.instantiate(strategy_cfg)  # constructing it needs no GPU; fitting does
    assert isinstance(strategy, FSDPStrategy) and strategy.kwargs["use_orig_params"] is True


def test_deepspeed_config_names_lightnings_deepspeed_strategy() -> None:
    """deepspeed is not installed here: the class must import, constructing it would need the package."""
    strategy_cfg = _strategy("deepspeed")
    assert strategy_cfg._target_ == "ragforget.training.distributed.HydraJobDeepSpeedStrategy"
    assert issubclass(hydra.utils.get_class(strategy_cfg._target_), DeepSpeedStrategy)
    assert strategy_cfg.stage == 2


def test_whole_weights_replace_each_rank_zero_shard_by_its_gathered_tensor() -> None:
    """What rank 0 does after an FSDP fit (not runnable here: torch needs a GPU for FSDP)."""
    layer = torch.nn.Linear(2, 3)
    wrapped = torch.nn.Module()
    wrapped._fsdp_wrapped_module = layer  # how a nested FSDP unit names what it wraps
    module = torch.nn.Module()
    module.model = wrapped
    whole = WholeWeights()
    module.model._fsdp_wrapped_module.weight.data = torch.zeros(0)  # a shard this rank does not hold
    whole.state = {"model.weight": torch.ones(3, 2), "model.bias": torch.full((3,), 2.0)}
    whole.restore(module)
    assert torch.equal(layer.weight, torch.ones(3, 2)) and torch.equal(layer.bias, torch.full((3,), 2.0))
    whole.state = {"model.weight": torch.ones(3, 2)}
    with pytest.raises(RuntimeError, match="use_orig_params"):
        whole.restore(module)
