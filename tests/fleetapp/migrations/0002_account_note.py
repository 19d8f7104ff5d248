"""A new column: the migration the fleet suites leave pending."""

from __future__ import annotations

from django.db import migrations, models

from tests import fleet


class Migration(migrations.Migration):
    """Add Account.note; fail on the databases the suite marks as failing."""

    dependencies = [("fleetapp", "0001_initial")]
    operations = [
        migrations.AddField("account", "note", models.CharField(default="", max_length=100)),
        migrations.RunPython(fleet.fail_if_marked, migrations.RunPython.noop),
    ]
