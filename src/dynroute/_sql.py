"""Which SQL statements only read: the classifier behind ``prevent_writes()``.

An allow-list, in the manner of Rails' ``prevent_writes`` and django-read-only: a
statement is a read only if it starts with a read keyword of its backend and holds no
part that writes. Everything else is a write, including what this module does not
understand. Before looking at keywords, string literals, quoted identifiers and
comments are blanked out (a comment can hide a write from a prefix test; a literal
can hold any word), and the text is split into statements (``SELECT 1; DELETE ...``
is a write).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["refused_part"]

# Literals, quoted identifiers and comments, blanked before keywords are read. MySQL's
# executable comments (/*! ... */) run their contents there, so for MySQL they are
# unwrapped instead. Backslash escapes are honoured in MySQL strings and in
# PostgreSQL's E'...' strings; standard strings double their quotes.
_COMMON: Final = r"""
    (?P<dollar>\$\$.*?\$\$)
  | (?P<tagged>\$(?P<tag>[A-Za-z_]\w*)\$.*?\$(?P=tag)\$)
  | (?P<escaped>[Ee]'(?:[^'\\]|\\.|'')*')
  | (?P<single>'(?:[^']|'')*')
  | (?P<double>"(?:[^"]|"")*")
  | (?P<backtick>`(?:[^`]|``)*`)
  | (?P<bracket>\[[^\]]*\])
  | (?P<line>--[^\n]*)
  | (?P<block>/\*.*?(?:\*/|\Z))
"""
_MYSQL: Final = r"""
    (?P<executable>/\*!\d*)
  | (?P<executable_end>\*/)
  | (?P<single>'(?:[^'\\]|\\.|'')*')
  | (?P<double>"(?:[^"\\]|\\.|"")*")
  | (?P<backtick>`(?:[^`]|``)*`)
  | (?P<line>(?:--\s|\#)[^\n]*)
  | (?P<block>/\*.*?(?:\*/|\Z))
"""
_BLANKS: Final = {
    "mysql": re.compile(_MYSQL, re.DOTALL | re.VERBOSE),
    None: re.compile(_COMMON, re.DOTALL | re.VERBOSE),
}
_WORD: Final = re.compile(r"[A-Za-z_][A-Za-z_0-9$]*")

# Statements that only read, by their first keyword, on every backend.
_READS: Final = frozenset(
    {"select", "with", "values", "table", "explain", "show", "set", "begin", "start",
     "commit", "end", "rollback", "savepoint", "release"}
)  # fmt: skip
# And per backend (Django's connection.vendor).
_VENDOR_READS: Final = {
    "postgresql": frozenset({"reset", "fetch", "move", "close", "declare"}),
    "mysql": frozenset({"describe", "desc", "use"}),
    "sqlite": frozenset({"pragma"}),
}
# Words that make a read-looking statement write or lock: a data-modifying part of
# WITH, SELECT ... FOR UPDATE/SHARE, LOCK IN SHARE MODE, SELECT ... INTO (a new
# table in PostgreSQL, a file in MySQL), and sequence functions.
_WRITE_WORDS: Final = frozenset(
    {"insert", "update", "delete", "merge", "share", "into", "lock", "nextval", "setval",
     "create", "drop", "alter", "truncate", "grant", "revoke"}
)  # fmt: skip
# SET forms that change the server, not the session (MySQL).
_SERVER_SETTINGS: Final = frozenset({"global", "persist", "persist_only", "password"})
# SQLite pragmas that change the database even without "=".
_WRITING_PRAGMAS: Final = frozenset(
    {"optimize", "wal_checkpoint", "incremental_vacuum", "shrink_memory"}
)


_COMMENTS: Final = frozenset({"line", "block", "executable", "executable_end"})
# Quoted names, kept in messages (values never are). MySQL's "..." is a string.
_NAMES: Final = {
    "mysql": frozenset({"backtick"}),
    None: frozenset({"double", "backtick", "bracket"}),
}


def _blank(sql: str, vendor: str, *, keep_names: bool = False) -> str:
    """Return ``sql`` with comments, literals and (unless ``keep_names``) quoted names blanked.

    Comments become a space; literals and names ``?``, so that no word inside them is
    read as a keyword, and no value reaches a message.
    """
    dialect = "mysql" if vendor == "mysql" else None
    names: frozenset[str] = _NAMES[dialect] if keep_names else frozenset()

    def replace(match: re.Match[str]) -> str:
        kind = match.lastgroup
        if kind in _COMMENTS:
            return " "
        if kind in names:
            return match.group()
        return " ? "

    return _BLANKS[dialect].sub(replace, sql)


def _statement_is_read(words: list[str], text: str, vendor: str) -> bool:
    first = words[0]
    if first not in _READS and first not in _VENDOR_READS.get(vendor, _NO_READS):
        return False
    check = _CHECKS.get(first)
    return check is None or check(words, text)


def _explain_reads(words: list[str], text: str) -> bool:  # noqa: ARG001 - a check
    # EXPLAIN shows a plan without running the statement, unless ANALYZE runs it: then
    # what follows the options must be a query that reads.
    if "analyze" not in words and "analyse" not in words:
        return True
    rest = [word for word in words[1:] if word not in _EXPLAIN_OPTIONS]
    return bool(rest) and rest[0] in _QUERIES and _WRITE_WORDS.isdisjoint(rest)


def _holds_no_write(words: list[str], text: str) -> bool:  # noqa: ARG001 - a check
    return _WRITE_WORDS.isdisjoint(words)


def _starts_a_transaction(words: list[str], text: str) -> bool:  # noqa: ARG001
    return words[1:2] == ["transaction"]


def _sets_the_session(words: list[str], text: str) -> bool:  # noqa: ARG001
    # Session settings read nothing and write nothing; these change the server.
    return _SERVER_SETTINGS.isdisjoint(words[1:2])


def _pragma_reads(words: list[str], text: str) -> bool:
    return "=" not in text and _WRITING_PRAGMAS.isdisjoint(words)


_NO_READS: Final[frozenset[str]] = frozenset()
# Statements that read unless a part of them writes.
_QUERIES: Final = frozenset({"select", "with", "values", "table"})
_CHECKS: Final[dict[str, Callable[[list[str], str], bool]]] = {
    "explain": _explain_reads,
    "select": _holds_no_write,
    "with": _holds_no_write,
    "values": _holds_no_write,
    "table": _holds_no_write,
    "declare": _holds_no_write,
    "start": _starts_a_transaction,
    "set": _sets_the_session,
    "pragma": _pragma_reads,
}


_EXPLAIN_OPTIONS: Final = frozenset(
    {"analyze", "analyse", "verbose", "costs", "settings", "buffers", "wal", "timing",
     "summary", "format", "text", "json", "xml", "yaml", "true", "false", "on", "off",
     "extended", "partitions", "memory", "serialize", "generic_plan", "query", "plan"}
)  # fmt: skip


def refused_part(sql: str, vendor: str) -> str | None:
    """Return the first words of the first statement of ``sql`` that may write, or ``None``.

    ``vendor`` is Django's ``connection.vendor``. ``None`` means every statement only
    reads; a statement that cannot be understood may write. The words come with
    literals and comments blanked: enough to recognise the statement in a message,
    never a value it carries.
    """
    parts = _blank(sql, vendor).split(";")
    if not any(part.strip() for part in parts):
        return "(an empty statement)"
    for index, part in enumerate(parts):
        words = [word.lower() for word in _WORD.findall(part)]
        if part.strip() and not (words and _statement_is_read(words, part, vendor)):
            # Shown with its quoted names, unless one holds a ";" (then as classified).
            shown = _blank(sql, vendor, keep_names=True).split(";")
            return _first_words(shown[index] if len(shown) == len(parts) else part)
    return None


def _first_words(statement: str, count: int = 3) -> str:
    words = statement.split()
    shown = " ".join(words[:count])
    return shown if len(words) <= count else f"{shown} ..."
