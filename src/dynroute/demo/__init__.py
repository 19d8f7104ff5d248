"""A walk through dynroute on throwaway SQLite files: ``python -m dynroute.demo``."""
