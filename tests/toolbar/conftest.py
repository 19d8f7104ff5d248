"""The routing panel's tests run only under their own settings (tests/toolbar/settings.py).

The main suite's settings have no toolbar, and its environments may not have the
package: there, this folder is not collected. Run it with
``pytest tests/toolbar --ds=tests.toolbar.settings``.
"""

from __future__ import annotations

import os

if os.environ.get("DJANGO_SETTINGS_MODULE") != "tests.toolbar.settings":
    collect_ignore_glob = ["test_*.py"]
