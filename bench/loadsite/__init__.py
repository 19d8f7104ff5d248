"""The Django project ``bench/load.py`` serves with gunicorn and uvicorn.

One project, three variants chosen by ``LOAD_VARIANT`` (read in :mod:`loadsite.settings`):

- ``plain``: plain Django; every tenant database is an alias of ``DATABASES`` and each
  view names its database with ``.using()``; replica reads use ``.using("replica")``;
- ``dynroute``: ``dynroute.DynamicDbRouter``, ``PrimaryReplicaMiddleware`` for the shared
  database, ``DatabaseMiddleware`` with a resolver returning the tenant's settings dict;
  the views use the ORM with no ``.using()``;
- ``multidb``: django-multidb-router 0.11 (``PinningReplicaRouter`` and its middleware)
  for the shared database, ``.using()`` for the tenants as in ``plain``.

``LOAD_ASYNC=1`` serves async views (uvicorn), otherwise sync views (gunicorn).
"""
