"""Management commands: ``manage.py dynroute``."""
