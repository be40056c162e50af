"""`tug image bootstrap debian:bookworm-slim` with the real debootstrap and the host's Debian mirror.

Takes a minute or more and needs the mirror: skipped unless TUG_TEST_DEBOOTSTRAP=1.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tugboat.images.bootstrap import bootstrap, host_debian_mirror
from tugboat.images.service import ImageService
from tugboat.snapshots.mount import umount

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("TUG_TEST_DEBOOTSTRAP") != "1",
                       reason="debootstrap takes minutes; set TUG_TEST_DEBOOTSTRAP=1"),
]


def test_host_mirror_is_found() -> None:
    assert host_debian_mirror().startswith("http")


def test_bootstrap_debian_slim_runs_and_is_cached(tmp_path) -> None:
    svc = ImageService(str(tmp_path / "root"))
    img = bootstrap(svc, "debian:bookworm-slim")
    assert img.repo_tags == ["debian:bookworm-slim"]
    spec = svc.snapshots.prepare("c", img)
    mnt = str(tmp_path / "mnt")
    spec.mount(mnt)
    try:
        out = subprocess.run(["chroot", mnt, "/bin/bash", "-c",
                              ". /etc/os-release; echo $VERSION_CODENAME; ls /usr/share/man | wc -l; "
                              "dpkg -s apt >/dev/null && echo apt-ok"],
                             capture_output=True, text=True, check=True).stdout.split()
    finally:
        umount(mnt)
    assert out == ["bookworm", "0", "apt-ok"]
    svc.remove("debian:bookworm-slim")
    t = time.monotonic()
    again = bootstrap(svc, "debian:bookworm-slim")
    assert time.monotonic() - t < 60
    assert again.id == img.id  # cached root fs: same layer, same config, same ID
