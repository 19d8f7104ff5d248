"""``settings.DYNROUTE_PRIMARY_REPLICA``, read and checked once: what the middleware runs on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypedDict, cast, final

from django.conf import settings
from django.http import HttpRequest

from dynroute.exceptions import ConfigurationError
from dynroute.http._streaming import imported
from dynroute.replicas import PrimaryReplica

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["SETTING", "CookieAttributes", "PrimaryReplicaSettings"]

SETTING: Final = "DYNROUTE_PRIMARY_REPLICA"
_KEYS: Final = {
    "primary": "the alias writes go to (default 'default')",
    "replicas": "the aliases reads may go to (required)",
    "pin_seconds": "seconds a client reads from the primary after it wrote, pinned by time "
    "(default 2, and 0 sets no pin cookie)",
    "pin": "'position' (the default) or 'time': how a write is carried to the next requests",
    "position_seconds": "seconds a position pin is kept at most (default 300)",
    "max_lag": "seconds a replica may be behind and still be chosen (default: no limit)",
    "lag_check_seconds": "how often each process asks a replica its lag (default 5)",
    "choose": "'round_robin', 'random' or a dotted path to a function (default 'round_robin')",
    "down_seconds": "seconds a replica that failed to connect is skipped (default 30)",
    "resolver": "a dotted path to a function (request) -> 'primary' | 'replica' | None",
    "cookie_name": "the pin cookie's name (default 'dynroute_pin')",
    "cookie_secure": "the pin cookie's Secure flag (default SESSION_COOKIE_SECURE)",
    "cookie_httponly": "the pin cookie's HttpOnly flag (default SESSION_COOKIE_HTTPONLY)",
    "cookie_samesite": "the pin cookie's SameSite (default SESSION_COOKIE_SAMESITE)",
}


class CookieAttributes(TypedDict):
    """The attributes of the pin cookie, as ``set_signed_cookie`` takes them."""

    secure: bool
    httponly: bool
    samesite: str | None
    path: str
    domain: str | None


@final
@dataclass(frozen=True, slots=True)
class PrimaryReplicaSettings:
    """``settings.DYNROUTE_PRIMARY_REPLICA``, checked: what the middleware runs on.

    Attributes:
        policy: The ``PrimaryReplica`` every request's block routes by.
        pin_seconds: How long a client reads from the primary after it wrote, when
            pinned by time (0: no pin cookie at all).
        position_seconds: How long a client's position pin is kept at most.
        resolver: The function deciding per request (``"primary"``, ``"replica"`` or
            ``None``), if any.
        cookie_name: The pin cookie's name.
        cookie: The pin cookie's attributes.
    """

    policy: PrimaryReplica
    pin_seconds: int
    position_seconds: int
    resolver: Callable[[HttpRequest], object] | None
    cookie_name: str
    cookie: CookieAttributes

    @classmethod
    def from_settings(cls) -> PrimaryReplicaSettings:
        """Read and check the setting.

        Raises:
            ConfigurationError: The setting is missing, has an unknown key, or names
                something that cannot be imported; ``pin_seconds`` or ``resolver`` is
                of the wrong kind.
            UsageError: A value of the policy is of the wrong type (as
                ``PrimaryReplica`` says).
        """
        given = _given()
        choose = given.get("choose", "round_robin")
        if choose not in ("round_robin", "random"):
            choose = _imported(given, "choose")
        policy = PrimaryReplica(
            given.get("primary", "default"),
            given["replicas"],
            choose=choose,
            down_seconds=given.get("down_seconds", 30.0),
            pin=given.get("pin", "position"),
            max_lag=given.get("max_lag"),
            lag_check_seconds=given.get("lag_check_seconds", 5.0),
        )
        pin_seconds = _seconds(given, "pin_seconds", 2)
        position_seconds = _seconds(given, "position_seconds", 300)
        resolver = _imported(given, "resolver")
        if resolver is not None and not callable(resolver):
            msg = f'settings.{SETTING}["resolver"] must be a function, got {resolver!r}.'
            raise ConfigurationError(msg)
        cookie: CookieAttributes = {
            "secure": given.get("cookie_secure", settings.SESSION_COOKIE_SECURE),
            "httponly": given.get("cookie_httponly", settings.SESSION_COOKIE_HTTPONLY),
            "samesite": given.get("cookie_samesite", settings.SESSION_COOKIE_SAMESITE),
            "path": settings.SESSION_COOKIE_PATH,
            "domain": settings.SESSION_COOKIE_DOMAIN,
        }
        name = given.get("cookie_name", "dynroute_pin")
        return cls(policy, pin_seconds, position_seconds, resolver, name, cookie)


def _seconds(given: Mapping[str, Any], key: str, default: int) -> int:
    """A whole number of seconds >= 0 from the setting."""
    seconds = given.get(key, default)
    if type(seconds) is not int or seconds < 0:
        msg = (
            f'settings.{SETTING}["{key}"] must be a whole number of seconds >= 0, got {seconds!r}.'
        )
        raise ConfigurationError(msg)
    return seconds


def _given() -> Mapping[str, Any]:
    """The setting as given: a dict with known keys, ``replicas`` among them."""
    given: object = getattr(settings, SETTING, None)
    if not isinstance(given, dict):
        msg = (
            f"PrimaryReplicaMiddleware needs settings.{SETTING}, a dict such as "
            f'{{"primary": "default", "replicas": ["replica1"]}}; got {type(given).__name__}.'
        )
        raise ConfigurationError(msg)
    config = cast("dict[str, Any]", given)
    unknown = sorted(str(key) for key in config if key not in _KEYS)
    if unknown:
        known = "; ".join(f"{key}: {meaning}" for key, meaning in _KEYS.items())
        msg = f"settings.{SETTING} has unknown key(s) {', '.join(unknown)}. Known keys: {known}."
        raise ConfigurationError(msg)
    if "replicas" not in config:
        msg = f'settings.{SETTING} needs "replicas": the aliases reads may go to.'
        raise ConfigurationError(msg)
    return config


def _imported(config: Mapping[str, Any], key: str) -> Any:  # noqa: ANN401 - whatever the path names
    value = config.get(key)
    if not isinstance(value, str):
        return value
    return imported(value, f"settings.{SETTING}[{key!r}]")
