"""The one device rule: config key ``device`` decides where every inference pass runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import compose_config
from omegaconf import DictConfig, ListConfig

from ragforget.errors import ConfigError
from ragforget.utils.device import check_device, resolve_device


def test_auto_is_cpu_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"


def test_auto_is_this_process_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == "cuda:0"
    monkeypatch.setenv("LOCAL_RANK", "3")  # a DDP worker evaluates on its own GPU, not on GPU 0
    assert resolve_device("auto") == "cuda:3"


@pytest.mark.parametrize("device", ["gpu0", "cuda:x"])
def test_unknown_device_names_the_key(device: str) -> None:
    with pytest.raises(ConfigError, match="'device'"):
        check_device(device)


def test_cuda_without_a_gpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device"):
        check_device("cuda")


def _device_keys(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every key named ``device`` in a config tree, with its resolved value."""
    found = []
    if isinstance(node, DictConfig):
        for key in node:
            child = node[key]
            here = f"{path}.{key}" if path else str(key)
            if key == "device":
                found.append((here, child))
            found += _device_keys(child, here)
    elif isinstance(node, ListConfig):
        for i, child in enumerate(node):
            found += _device_keys(child, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("groups", [["method=sdft", "retriever=dense"], ["method=self_synth", "retriever=invar"],
                                    ["method=[selfaug,replay]", "trainer=gpu"]])
def test_every_inference_part_follows_the_one_key(groups: list[str]) -> None:
    cfg = compose_config([*groups, "device=cpu"])
    keys = [(path, value) for path, value in _device_keys(cfg) if path != "device"]
    assert all(value == "cpu" for _, value in keys), keys
    if groups[0] != "method=[selfaug,replay]":
        assert keys, "these groups have inference passes; each must read the top-level device"


def test_a_missing_gpu_fails_before_any_work(tmp_path: Path) -> None:
    from ragforget.pipeline import Job

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = compose_config(["model=tiny_random", "device=cuda", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="'device'"):
        Job.for_config(cfg, tmp_path)
    assert not any(tmp_path.iterdir())


RETAINED_THEN_RELEASED = """
import psutil, torch
from ragforget.utils.device import release_memory
process = psutil.Process()
for _ in range(2):  # the first round raises glibc's mmap threshold; the second round lands in the heap
    blocks = [torch.ones(512 * 1024) for _ in range(150)]  # 150 x 2 MiB, like training's activations
    del blocks
before = process.memory_info().rss
release_memory()
print(before - process.memory_info().rss)
"""


def test_release_memory_gives_freed_blocks_back() -> None:
    """Freed mid-sized tensors stay in glibc's heap (RSS) until trimmed; a fresh process makes it repeatable."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", RETAINED_THEN_RELEASED], capture_output=True, text=True, check=True)
    assert int(done.stdout.strip().splitlines()[-1]) > 200 * 2**20
