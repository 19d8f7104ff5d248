"""Optional integrations of dynroute with third-party packages.

Each subpackage needs its package (installed with an extra, as
``pip install django-dynroute[debug-toolbar]``) and is imported only when used:
nothing here runs, or costs anything, otherwise.
"""
