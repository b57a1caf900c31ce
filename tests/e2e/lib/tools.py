"""External tools the suite drives (swaks, msmtp, postfix)."""
from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, package: str) -> str:
    """Path of an external tool; skips when it is missing on a developer machine and
    fails in CI (CI set), where scripts/test.sh installs it."""
    path = shutil.which(name)
    if not path and os.access(f"/usr/sbin/{name}", os.X_OK):
        path = f"/usr/sbin/{name}"
    if path:
        return path
    msg = f"{name} is not installed (Debian package {package}; scripts/test.sh installs it)"
    if os.environ.get("CI"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)
