"""fetch_package verifies sha256 and never leaves bad files; read_member / extract_members on zip and tar.gz."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from helpers import visible

import ragforget.assets.packages as packages
from ragforget.assets.packages import PackageSpec, extract_members, fetch_package, read_member
from ragforget.errors import AssetError

GOOD = b"the real package bytes\n" * 10
FILENAME = "demo_pkg-1.0-py3-none-any.whl"


def _spec(data: bytes = GOOD) -> PackageSpec:
    return PackageSpec(name="demo-pkg", version="1.0", sha256=hashlib.sha256(data).hexdigest(),
                       filename=FILENAME)


class FakePip:
    """Stands in for ``pip_download``: writes ``data`` under the expected filename and counts calls."""

    def __init__(self, data: bytes, filename: str = FILENAME) -> None:
        self.data = data
        self.filename = filename
        self.calls: list[str] = []

    def __call__(self, requirement: str, dest: Path) -> None:
        self.calls.append(requirement)
        (dest / self.filename).write_bytes(self.data)


def _downloads(tmp_path: Path) -> Path:
    downloads = tmp_path / "cache" / "downloads"
    downloads.mkdir(parents=True)
    return downloads


def test_corrupted_download_raises_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    downloads = _downloads(tmp_path)
    fake = FakePip(b"garbage")
    monkeypatch.setattr(packages, "pip_download", fake)
    with pytest.raises(AssetError, match="sha256"):
        fetch_package(_spec(), downloads)
    assert fake.calls == ["demo-pkg==1.0"]
    assert visible(downloads) == []
    # the temporary download folder is cleaned up too
    assert visible(downloads.parent) == ["downloads"]


def test_fresh_download_is_verified_and_placed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    downloads = _downloads(tmp_path)
    fake = FakePip(GOOD)
    monkeypatch.setattr(packages, "pip_download", fake)
    path = fetch_package(_spec(), downloads)
    assert path == downloads / FILENAME
    assert path.read_bytes() == GOOD
    assert fake.calls == ["demo-pkg==1.0"]
    assert visible(downloads) == [FILENAME]


def test_cached_good_file_skips_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    downloads = _downloads(tmp_path)
    (downloads / FILENAME).write_bytes(GOOD)

    def no_pip(requirement: str, dest: Path) -> None:
        raise AssertionError("pip must not run for a verified cached file")

    monkeypatch.setattr(packages, "pip_download", no_pip)
    assert fetch_package(_spec(), downloads) == downloads / FILENAME
    assert (downloads / FILENAME).read_bytes() == GOOD


def test_cached_corrupted_file_is_downloaded_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    downloads = _downloads(tmp_path)
    (downloads / FILENAME).write_bytes(b"truncated")
    fake = FakePip(GOOD)
    monkeypatch.setattr(packages, "pip_download", fake)
    path = fetch_package(_spec(), downloads)
    assert fake.calls == ["demo-pkg==1.0"]
    assert path.read_bytes() == GOOD


def test_cached_corrupted_and_bad_download_leaves_nothing(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    downloads = _downloads(tmp_path)
    (downloads / FILENAME).write_bytes(b"truncated")
    monkeypatch.setattr(packages, "pip_download", FakePip(b"still garbage"))
    with pytest.raises(AssetError, match="sha256"):
        fetch_package(_spec(), downloads)
    assert not (downloads / FILENAME).exists()


def test_unexpected_filename_from_pip_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    downloads = _downloads(tmp_path)
    monkeypatch.setattr(packages, "pip_download", FakePip(GOOD, filename="demo_pkg-1.0.tar.gz"))
    with pytest.raises(AssetError, match=FILENAME):
        fetch_package(_spec(), downloads)
    assert visible(downloads) == []


# ---- archives ---------------------------------------------------------------------------------

MEMBERS = {"pkg/data/a.txt": b"alpha", "pkg/data/sub/b.json": b'{"b": 1}', "README": b"readme"}


@pytest.fixture()
def wheel(tmp_path: Path) -> Path:
    path = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in MEMBERS.items():
            zf.writestr(name, data)
    return path


@pytest.fixture()
def sdist(tmp_path: Path) -> Path:
    path = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        directory = tarfile.TarInfo("pkg-1.0/pkg")
        directory.type = tarfile.DIRTYPE
        tf.addfile(directory)
        for name, data in MEMBERS.items():
            info = tarfile.TarInfo(f"pkg-1.0/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("archive_name", ["wheel", "sdist"])
def test_read_member(archive_name: str, request: pytest.FixtureRequest) -> None:
    archive: Path = request.getfixturevalue(archive_name)
    for name, data in MEMBERS.items():
        assert read_member(archive, name) == data


def test_read_member_sdist_also_accepts_the_full_name(sdist: Path) -> None:
    assert read_member(sdist, "pkg-1.0/README") == b"readme"


@pytest.mark.parametrize("archive_name", ["wheel", "sdist"])
def test_read_member_missing_raises(archive_name: str, request: pytest.FixtureRequest) -> None:
    archive: Path = request.getfixturevalue(archive_name)
    with pytest.raises(AssetError, match="no member pkg/missing.txt"):
        read_member(archive, "pkg/missing.txt")


def test_read_member_sdist_directory_is_not_a_member(sdist: Path) -> None:
    with pytest.raises(AssetError):
        read_member(sdist, "pkg")


@pytest.mark.parametrize("archive_name", ["wheel", "sdist"])
def test_extract_members(archive_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    archive: Path = request.getfixturevalue(archive_name)
    out = tmp_path / "out"
    targets = {"pkg/data/a.txt": out / "a.txt", "pkg/data/sub/b.json": out / "nested" / "b.json"}
    extract_members(archive, targets)
    assert (out / "a.txt").read_bytes() == b"alpha"
    assert (out / "nested" / "b.json").read_bytes() == b'{"b": 1}'
    # only the requested members and no temporary leftovers
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["a.txt", "nested", "nested/b.json"]


@pytest.mark.parametrize("archive_name", ["wheel", "sdist"])
def test_extract_members_skips_existing(archive_name: str, request: pytest.FixtureRequest,
                                        tmp_path: Path) -> None:
    archive: Path = request.getfixturevalue(archive_name)
    existing = tmp_path / "a.txt"
    existing.write_bytes(b"already here")
    fresh = tmp_path / "readme"
    extract_members(archive, {"pkg/data/a.txt": existing, "README": fresh})
    assert existing.read_bytes() == b"already here"
    assert fresh.read_bytes() == b"readme"


def test_extract_members_all_existing_does_not_open_archive(tmp_path: Path) -> None:
    existing = tmp_path / "a.txt"
    existing.write_bytes(b"x")
    extract_members(tmp_path / "does-not-exist.tar.gz", {"pkg/data/a.txt": existing})
    assert existing.read_bytes() == b"x"


@pytest.mark.parametrize("archive_name", ["wheel", "sdist"])
def test_extract_members_missing_raises(archive_name: str, request: pytest.FixtureRequest,
                                        tmp_path: Path) -> None:
    archive: Path = request.getfixturevalue(archive_name)
    with pytest.raises(AssetError, match="missing"):
        extract_members(archive, {"pkg/data/a.txt": tmp_path / "a.txt", "pkg/missing.txt": tmp_path / "m.txt"})
    assert not (tmp_path / "m.txt").exists()


def test_fetch_creates_a_missing_downloads_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    downloads = tmp_path / "cache" / "downloads"   # a fresh cache: the root exists, downloads/ not yet
    downloads.parent.mkdir()
    monkeypatch.setattr(packages, "pip_download", FakePip(GOOD))
    assert fetch_package(_spec(), downloads).read_bytes() == GOOD
    assert visible(downloads.parent) == ["downloads"]
