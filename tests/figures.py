"""Figures the reliability suites collect, printed at the end of the pytest run.

``DYNROUTE_RELIABILITY=full`` (the ``reliability`` nox session) runs the full counts
the README quotes; the default is a shorter run for every test session.
"""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import Phase, settings

FULL = os.environ.get("DYNROUTE_RELIABILITY", "") == "full"
NO_SHRINK = bool(os.environ.get("DYNROUTE_HYPOTHESIS_NO_SHRINK"))

#: State-machine examples, hostile inputs, stress operations.
STATE_MACHINE_EXAMPLES = 500 if FULL else 100
HOSTILE_EXAMPLES = 2000 if FULL else 150
STRESS_OPERATIONS = 120_000 if FULL else 12_000

#: Hypothesis settings shared by the suites. In every test session (CI's profile) the
#: examples are derandomized: the same programs run every time, so a test that
#: catches a bug catches it on every run, and a failure can be rerun as it was. The
#: full-size run (``nox -s reliability``) explores new examples each time instead.
#: No example database either way: a failure is reported with its program in full.
HYPOTHESIS = settings(
    derandomize=not FULL,
    database=None,
    deadline=None,
    # Mutation testing (nox -s mutation) needs to know that a test fails, not the
    # smallest example that makes it fail: shrinking can take minutes.
    phases=[phase for phase in Phase if phase != Phase.shrink or not NO_SHRINK],
)

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
    "hostile_dicts": "hostile inputs that are settings dicts with valid flags",
    "hostile_built": "hostile inputs that built a block (entry attempted)",
    "hostile_entered": "hostile inputs that entered a block and left it",
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
