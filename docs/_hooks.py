"""MkDocs hook: links to repository files in included text point at GitHub.

Included files (BENCHMARKS.md, CHANGELOG.md, README sections) link files of the
repository (``bench/run.py``) by relative paths that are not documentation pages:
after the snippets are included, such links point at the file on GitHub.
"""

# ruff: noqa: INP001 - loaded by MkDocs as a hook file, not imported as a package

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markdown import Extension
from markdown.preprocessors import Preprocessor

if TYPE_CHECKING:
    from markdown import Markdown

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
_LINK = re.compile(r"\]\((?P<target>[^)\s#:]+)(?P<anchor>#[^)\s]*)?\)")


class _RepositoryLinks(Preprocessor):
    """Point links at repository files that are not pages to the file on GitHub."""

    def __init__(self, md: Markdown, blob: str) -> None:
        super().__init__(md)
        self.blob = blob

    def run(self, lines: list[str]) -> list[str]:
        return [_LINK.sub(self._link, line) for line in lines]

    def _link(self, match: re.Match[str]) -> str:
        target = match["target"]
        if (DOCS / target).exists() or not (ROOT / target).exists():
            return match[0]  # a page, or not a repository file: MkDocs checks it
        return f"]({self.blob}{target}{match['anchor'] or ''})"


class _RepositoryLinksExtension(Extension):
    def __init__(self, blob: str) -> None:
        super().__init__()
        self.blob = blob

    def extendMarkdown(self, md: Markdown) -> None:  # noqa: N802 - Markdown's API
        # Priority 20: after pymdownx.snippets (32) has included the files.
        md.preprocessors.register(_RepositoryLinks(md, self.blob), "repository_links", 20)


def on_config(config: Any, **kwargs: Any) -> Any:  # noqa: ANN401, ARG001 - MkDocs' hook signature
    """Register the link rewriting, pointing at ``repo_url``'s main branch."""
    blob = f"{config['repo_url'].rstrip('/')}/blob/main/"
    config["markdown_extensions"].append(_RepositoryLinksExtension(blob))
    return config
