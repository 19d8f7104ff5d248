"""Misuse that type checkers must report; checked by mypy and pyright, never run.

Each line below is an error. Its ignore comment, with the error code mypy gives, is
what keeps the check green, and both checkers fail on an ignore that suppresses nothing
(``warn_unused_ignores``, ``reportUnnecessaryTypeIgnoreComment``): if a misuse stops
being reported, the typing check fails.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model

import dynroute
import dynroute.typing
from dynroute import DatabaseAlias, ReadOnly, in_database


class ReadsOnly:
    """Not a policy: db_for_write is missing."""

    def db_for_read(self, model: type[Model], /, **hints: Any) -> str | None:
        return None


class AnswersInt:
    """Not a policy: it answers a number, not an alias."""

    def db_for_read(self, model: type[Model], **hints: Any) -> int:
        return 0

    def db_for_write(self, model: type[Model], **hints: Any) -> int:
        return 0


class TakesNoHints:
    """Not a policy: Django calls it with hints (instance=...), which it refuses."""

    def db_for_read(self, model: type[Model]) -> str | None:
        return None

    def db_for_write(self, model: type[Model]) -> str | None:
        return None


@in_database("replica")
def count_rows(table: str) -> int:
    return len(table)


# A target of the wrong type.
in_database(2)  # type: ignore[call-overload]  # misuse: an int target
in_database(["replica"])  # type: ignore[call-overload]  # misuse: a list target
DatabaseAlias(3)  # type: ignore[arg-type]  # misuse: an int alias

# Both a target and a policy, or neither.
in_database("replica", policy=ReadOnly("replica"))  # type: ignore[call-overload]  # misuse: both
in_database()  # type: ignore[call-overload]  # misuse: neither target nor policy

# Something that is not a policy as policy=.
in_database(policy=ReadsOnly())  # type: ignore[call-overload]  # misuse: half a policy
in_database(policy="replica")  # type: ignore[call-overload]  # misuse: a str as policy
in_database(policy=object())  # type: ignore[call-overload]  # misuse: no methods at all
in_database(policy=AnswersInt())  # type: ignore[call-overload]  # misuse: returns an int
in_database(policy=TakesNoHints())  # type: ignore[call-overload]  # misuse: Django passes hints

# A flag that is not a bool; flags are keyword-only.
in_database("replica", read="yes")  # type: ignore[call-overload]  # misuse: a str flag
in_database("replica", write=1)  # type: ignore[call-overload]  # misuse: an int flag
in_database("replica", True)  # type: ignore[call-overload]  # misuse: a positional flag

# Flags with a policy.
in_database(policy=ReadOnly("replica"), write=True)  # type: ignore[call-overload]  # misuse: flag + policy

# A decorated function keeps its signature, so wrong calls are still caught.
count_rows(1)  # type: ignore[arg-type]  # misuse: an int for a str parameter
_: str = count_rows("t")  # type: ignore[assignment]  # misuse: the result is an int


class Custom:
    """A custom policy: its blocks have no single alias."""

    def db_for_read(self, model: type[Model], /, **hints: Any) -> str | None:
        return None

    def db_for_write(self, model: type[Model], /, **hints: Any) -> str | None:
        return None


def a_custom_policys_alias_may_be_none() -> None:
    with in_database(policy=Custom()) as route:
        len(route.alias)  # type: ignore[arg-type]  # misuse: the alias may be None


# dynroute.atomic: Django's argument types.
dynroute.atomic(using=1)  # type: ignore[call-overload]  # misuse: an int alias
dynroute.on_commit(count_rows)  # type: ignore[arg-type]  # misuse: a callback taking arguments
dynroute.prevent_writes("yes")  # type: ignore[arg-type]  # misuse: a str flag
in_database("replica", prevent_writes=1)  # type: ignore[call-overload]  # misuse: an int flag

# Primary and replicas.
dynroute.PrimaryReplica("default", ("r",), choose="fastest")  # type: ignore[arg-type]  # misuse: no such choice
dynroute.PrimaryReplica("default", ("r",), choose=lambda _up: 1)  # type: ignore[arg-type,return-value]  # misuse: a choice that is not an alias
dynroute.PrimaryReplica("default", (1,))  # type: ignore[arg-type]  # misuse: an int alias
dynroute.PrimaryReplica("default", ("r",), pin_after_write="yes")  # type: ignore[arg-type]  # misuse: a str flag
dynroute.use_primary("default")  # type: ignore[call-overload]  # misuse: use_primary takes no alias
dynroute.unlocked("default")  # type: ignore[call-overload]  # misuse: unlocked takes no alias

# Signals: the closing reason is one of three strings.
_reason: dynroute.typing.CloseReason = "closed"  # type: ignore[assignment]  # misuse: not a reason
