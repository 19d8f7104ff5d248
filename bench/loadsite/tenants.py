"""The dynroute variant's resolver: the tenant named by the request's header, as a dict."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loadsite.config import TENANT_HEADER, TENANTS, database

if TYPE_CHECKING:
    from django.http import HttpRequest


def database_for(request: HttpRequest) -> dict[str, Any] | None:
    """Return the settings of the tenant's database, or ``None`` (the shared database).

    Built on every request, as a project that looks its tenants up would; its
    ``CONN_MAX_AGE`` makes dynroute keep the connection for the tenant's next request.
    """
    tenant = request.headers.get(TENANT_HEADER)
    if tenant is None or tenant not in TENANTS:
        return None
    return database(tenant)
