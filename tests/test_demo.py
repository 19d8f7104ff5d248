"""The demo README's first command runs: it must work and report what it shows."""

from __future__ import annotations

import os
import subprocess
import sys


def test_the_demo_runs_and_every_step_routes_as_documented():
    """``python -m dynroute.demo`` exits 0 and prints each step's databases."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-m", "dynroute.demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Every step routed as documented." in done.stdout
    assert "read  -> external" in done.stdout
    assert "write -> default" in done.stdout
    assert "UNEXPECTED" not in done.stdout
