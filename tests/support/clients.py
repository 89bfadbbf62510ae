"""Third-party clients of the fake GitHub: `gateway fake-github` in a process of its own (`fake_github`),
and octokit's packages installed once from tests/clients' lockfile into .cache/npm (`octokit`)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .processes import REPO

CLIENTS = REPO / "tests" / "clients"
NPM_DIR = REPO / ".cache" / "npm"  # node_modules here, never in the repository's root
NPM_STAMP = NPM_DIR / ".installed"
_LOCKED = ("package.json", "package-lock.json")


@dataclass(frozen=True)
class Served:
    url: str
    tokens: dict[str, str]  # login → the token issued to them
    banner: list[str]


@contextlib.contextmanager
def fake_github(*argv: str) -> Iterator[Served]:
    """`gateway fake-github --port 0 ARGV` until the block ends; it must stop on SIGTERM with status 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "fake-github", "--port", "0", *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        banner = []
        while not (line := proc.stdout.readline()).startswith("stop it"):
            assert line, "gateway fake-github exited before serving"
            banner.append(line.rstrip("\n"))
        tokens = {ln.split()[2]: ln.split()[-1] for ln in banner if ln.startswith("  token for ")}
        yield Served(banner[0].split()[4], tokens, banner)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        proc.stdout.close()


def octokit() -> Path:
    """The directory whose node_modules hold tests/clients' packages, installed with `npm ci` the first
    time (and again when the lockfile changes); skips the test where node or npm is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("octokit's test needs node and npm (make test installs Debian's nodejs and npm as root)")
    locked = [CLIENTS / name for name in _LOCKED]
    if NPM_STAMP.exists() and all(f.stat().st_mtime <= NPM_STAMP.stat().st_mtime for f in locked):
        return NPM_DIR
    NPM_DIR.mkdir(parents=True, exist_ok=True)
    for source in locked:
        shutil.copyfile(source, NPM_DIR / source.name)
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--cache", str(NPM_DIR.parent / "npm-cache")],
        cwd=NPM_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        pytest.skip(f"npm ci could not install tests/clients' packages: {done.stderr.strip()[-500:]}")
    NPM_STAMP.touch()
    return NPM_DIR
