"""Types to annotate code that uses dynroute.

- :class:`RoutingPolicy`: what ``in_database(policy=...)`` accepts.
- :class:`RoutingHints`: the hints its methods receive, as a ``TypedDict``.
- :class:`DatabaseSettings`: one entry of ``settings.DATABASES``, as a ``TypedDict``.
- :data:`TargetLike`: everything ``in_database`` accepts as a target.
- :data:`DatabaseTarget`: the normalised target, an alias or a configuration.
- :data:`CloseReason`: the ``reason`` of :data:`~dynroute.signals.configuration_closed`.
"""

from __future__ import annotations

from dynroute.core import (
    DatabaseSettings,
    DatabaseTarget,
    RoutingHints,
    RoutingPolicy,
    TargetLike,
)
from dynroute.observe import CloseReason

__all__ = [
    "CloseReason",
    "DatabaseSettings",
    "DatabaseTarget",
    "RoutingHints",
    "RoutingPolicy",
    "TargetLike",
]
