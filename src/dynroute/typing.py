"""Types to annotate code that uses dynroute.

- :class:`RoutingPolicy`: what ``in_database(policy=...)`` accepts.
- :class:`DatabaseSettings`: one entry of ``settings.DATABASES``, as a ``TypedDict``.
- :data:`TargetLike`: everything ``in_database`` accepts as a target.
- :data:`DatabaseTarget`: the normalised target, an alias or a configuration.
"""

from __future__ import annotations

from dynroute._policies import RoutingPolicy
from dynroute._settings import DatabaseSettings
from dynroute._targets import DatabaseTarget, TargetLike

__all__ = ["DatabaseSettings", "DatabaseTarget", "RoutingPolicy", "TargetLike"]
