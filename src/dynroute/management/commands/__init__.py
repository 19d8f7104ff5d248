"""``manage.py dynroute`` (commands/dynroute.py)."""
