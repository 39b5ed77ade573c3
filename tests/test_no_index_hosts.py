"""The repository names no package-index host.

Installs go through pip's own configuration (pip.conf, PIP_* variables: a local wheel store, a
mirror) or an index URL the user gives (scripts/setup.sh: IBSR_TORCH_INDEX_URL), so the same
files work wherever pip is set up, including machines that reach no public index. Markdown
documents may cite sources by address and are not scanned; nor is vendored third-party code.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INDEX_HOSTS = ("pypi.org", "pypi.python.org", "files.pythonhosted.org", "download.pytorch.org",
               "pypi.nvidia.com", "conda.anaconda.org", "repo.anaconda.com", "registry.npmjs.org")
# An index or wheel-store address written into a pip command, whatever the host.
PIP_URL = re.compile(r"(--(extra-)?index-url|--find-links)[ =]+['\"]?(https?|file)://", re.IGNORECASE)
NOT_SCANNED = ("ibsr/serve/static/vendor/",)  # three.js, copied from its npm package as it is


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no list of tracked files")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in names.decode().split("\0")
            if name and not name.endswith(".md") and not name.startswith(NOT_SCANNED)]


def test_no_tracked_file_names_a_package_index_host():
    found = []
    for path in tracked_files():
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # weights, images: not instructions
        lowered = text.lower()
        found += [f"{path.relative_to(ROOT)}: {host}" for host in INDEX_HOSTS if host in lowered]
        found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in PIP_URL.finditer(text)]
    assert not found, found
