"""An app with migrations, for the suites that migrate the directory's databases."""
