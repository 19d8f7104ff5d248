"""Figures the reliability suites collect, printed at the end of the pytest run.

``DYNROUTE_RELIABILITY=full`` (the ``reliability`` nox session) runs the full counts
the README quotes; the default is a shorter run for every test session.
"""

from __future__ import annotations

import os
from collections import Counter

FULL = os.environ.get("DYNROUTE_RELIABILITY", "") == "full"

#: State-machine examples, hostile inputs, stress operations.
STATE_MACHINE_EXAMPLES = 500 if FULL else 60
HOSTILE_EXAMPLES = 2000 if FULL else 150
STRESS_OPERATIONS = 120_000 if FULL else 12_000

FIGURES: Counter[str] = Counter()

LABELS = {
    "state_machine_examples": "state machine: examples run",
    "state_machine_steps": "state machine: steps checked against the model",
    "stress_operations": "stress: routed operations checked",
    "stress_queries": "stress: queries among them",
    "stress_runtime_blocks": "stress: blocks on runtime configurations",
    "stress_misroutes": "stress: misroutes",
    "stress_leaked_aliases": "stress: aliases left registered",
    "stress_leaked_sessions": "stress: server sessions left open",
    "faults_survived": "faults injected and survived",
    "hostile_inputs": "hostile inputs tried",
    "hostile_refused": "hostile inputs refused with a documented error",
    "hostile_leaks": "hostile inputs leaving an alias or a route behind",
    "hostile_secrets": "messages showing the password",
}


def record(name: str, amount: int = 1) -> None:
    """Add to a figure."""
    FIGURES[name] += amount


def report() -> list[str]:
    """The figures, one line each, in a fixed order."""
    return [f"{LABELS[name]}: {FIGURES[name]:,}" for name in LABELS if name in FIGURES]
