"""Multi-process training with Lightning's own strategies, one Hydra job at a time.

Lightning's default launcher (start method ``popen``) starts ranks 1..N-1 by running the script again.
Under Hydra it repeats the *original* command line plus ``hydra.run.dir=<run dir>``: with ``--multirun``
every worker would start the whole sweep again, in ``hydra.run.dir`` (not the job's folder), and each
would run our whole pipeline. The strategies here swap in a launcher that starts the workers as *this
job* only, in this job's folder; the pipeline sees ``global_rank() != 0`` there and only trains.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from unittest import mock

import torch
from hydra.core.override_parser.types import Quote, QuotedString
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy
from lightning.pytorch.strategies.launchers import subprocess_script
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from ragforget.errors import ConfigError
from ragforget.utils.logging import get_logger

log = get_logger(__name__)

# What Lightning's launcher writes into the launching process's own environment for its children.
_LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def global_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's rank, from the environment, before Lightning starts (0: the main process).

    RANK (torchrun), else SLURM_PROCID (srun), and LOCAL_RANK (set by Lightning's launcher on the
    workers it starts). The larger one wins: a global rank is never below the local one, and a worker
    inherits its parent's RANK or SLURM_PROCID (e.g. 0 in an interactive srun shell) but gets its own
    LOCAL_RANK. Single-node only: Lightning's launcher gives a second node's main process no variable
    that says it is not rank 0 (torchrun and srun do).
    """
    env = os.environ if environ is None else environ

    def read(name: str) -> int:
        return int(env.get(name) or 0)

    launched = read("RANK") if env.get("RANK") else read("SLURM_PROCID")
    return max(launched, read("LOCAL_RANK"))


def quote_override_value(value: str) -> str:
    """``value`` as a quoted Hydra override value (spaces, commas, brackets, ``=`` and quotes survive).

    Lightning wraps the run dir in double quotes without escaping; Hydra's own quoting escapes too.
    """
    return QuotedString(text=value, quote=Quote.single).with_quotes()


def worker_command(script: Sequence[str], task_overrides: Sequence[str], job_dir: str, job_name: str,
                   config_name: str | None = None) -> list[str]:
    """The command line of a worker of one Hydra job: its overrides, none of the sweep's, in its folder.

    ``task_overrides`` are passed as they are: Popen does not go through a shell, and Hydra recorded
    them as the user's shell handed them over (``eval.retention.tasks=[wiki_ppl]`` stays one argument).
    Workers write no ``.hydra/`` folder (rank 0 writes the job's config) and log to their own
    ``<job_name>.log`` rather than appending to rank 0's.
    """
    config = ["--config-name", config_name] if config_name else []
    hydra_overrides = [f"hydra.run.dir={quote_override_value(job_dir)}", "hydra.output_subdir=null",
                       "hydra.job.chdir=false", f"hydra.job.name={job_name}"]
    return [*script, *config, *task_overrides, *hydra_overrides]


def _script() -> list[str]:
    """How this process was started: ``python -m module`` or ``python /abs/path/run.py``."""
    from hydra.utils import to_absolute_path

    import __main__  # imported here, as Lightning does (Lightning-AI/pytorch-lightning#15218)

    if __main__.__spec__ is not None:
        return [sys.executable, "-m", __main__.__spec__.name]
    return [sys.executable, to_absolute_path(sys.argv[0])]


def hydra_job_command(local_rank: int) -> tuple[list[str], str]:
    """Drop-in for Lightning's ``_hydra_subprocess_cmd``: (worker command, cwd) for this Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    hydra_cfg = HydraConfig.get()
    command = worker_command(_script(), list(hydra_cfg.overrides.task), str(hydra_cfg.runtime.output_dir),
                             f"{hydra_cfg.job.name}_rank{local_rank}", hydra_cfg.job.config_name)
    log.info("starting DDP worker %d: %s", local_rank, " ".join(command))
    return command, get_original_cwd()


class HydraJobLauncher(_SubprocessScriptLauncher):
    """Lightning's popen launcher, with workers that re-run this Hydra job instead of the command line.

    Lightning's loop looks ``_hydra_subprocess_cmd`` up as a global of its module each time it starts a
    child, so replacing that one name while it runs keeps everything else Lightning's: the MASTER_*/
    rank variables, seeding, Popen bookkeeping and the process observer. It touches two private names
    (this class and that function): a Lightning upgrade that renames them fails at import or in
    ``mock.patch.object``; one that stops calling the function fails tests/test_ddp.py's multirun test.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._environment_before: dict[str, str | None] | None = None

    def launch(self, function: Callable[..., Any], *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        result = super().launch(function, *args, trainer=trainer, **kwargs)
        self._release()  # after success only: a failed fit ends the Hydra job (and a sweep) anyway
        return result

    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            raise ConfigError("trainer.strategy", "this strategy starts its workers as a Hydra job",
                              "run it through run.py, or use Lightning's own DDPStrategy outside Hydra")
        self._environment_before = {name: os.environ.get(name) for name in _LAUNCH_VARIABLES}
        with mock.patch.object(subprocess_script, "_hydra_subprocess_cmd", hydra_job_command):
            super()._call_children_scripts()

    def _release(self) -> None:
        """Undo what fitting left process-wide, so that a multirun's next job in this process starts clean.

        Left alone, the next job would find LOCAL_RANK set, conclude that an outside launcher started
        its processes, start no workers, and train in the old process group with workers that have left.
        """
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        if self._environment_before is None:  # a worker, or processes started by torchrun/srun
            return
        for name, value in self._environment_before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._environment_before = None


class _HydraJobLaunch:
    """Mixin for a Lightning strategy: use ``HydraJobLauncher`` wherever it would use the popen launcher."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()  # type: ignore[misc]
        launcher = getattr(self, "_launcher", None)
        if type(launcher) is _SubprocessScriptLauncher:  # not spawn/fork, not processes started outside
            self._launcher = HydraJobLauncher(launcher.cluster_environment, launcher.num_processes,
                                              launcher.num_nodes)


class HydraJobDDPStrategy(_HydraJobLaunch, DDPStrategy):  # type: ignore[misc]  # both declare _launcher
    """Lightning's DDPStrategy; its workers run this Hydra job's training only (see the module docstring)."""


class HydraJobFSDPStrategy(_HydraJobLaunch, FSDPStrategy):  # type: ignore[misc]
    """Lightning's FSDPStrategy with the same workers as ``HydraJobDDPStrategy``."""


class HydraJobDeepSpeedStrategy(_HydraJobLaunch, DeepSpeedStrategy):  # type: ignore[misc]
    """Lightning's DeepSpeedStrategy (needs ``pip install deepspeed``) with the same workers."""
