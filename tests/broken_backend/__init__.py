"""A database backend whose import fails with a long message (see test_messages.py)."""
