"""Importing this backend fails, as a broken third-party backend's import would."""

msg = "this backend cannot start: " + "the reason goes on " * 40
raise RuntimeError(msg)
