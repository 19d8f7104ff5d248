"""Which SQL statements only read: the classifier behind ``prevent_writes()``.

An allow-list, in the manner of Rails' ``prevent_writes`` and django-read-only: a
statement is a read only if it starts with a read keyword of its backend and holds no
part that writes. Everything else is a write, including what this module does not
understand. Before looking at keywords, string literals, quoted identifiers and
comments are blanked out, by the quoting rules of the backend (a comment can hide a
write from a prefix test; a literal can hold any word), and the text is split into
statements (``SELECT 1; DELETE ...`` is a write).
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["blank_literals", "may_write", "refused_part", "statement_text"]

# Literals, quoted identifiers and comments of each dialect. Standard strings double
# their quotes; MySQL's and PostgreSQL's E'...' strings also take backslash escapes.
# MySQL runs the contents of its executable comments (/*! ... */): they are unwrapped.
_LINE: Final = r"(?P<line>--[^\n]*)"
_BLOCK: Final = r"(?P<block>/\*.*?(?:\*/|\Z))"
_SINGLE: Final = r"(?P<single>'(?:[^']|'')*')"
_DOUBLE: Final = r'(?P<double>"(?:[^"]|"")*")'
_BACKTICK: Final = r"(?P<backtick>`(?:[^`]|``)*`)"
_DIALECTS: Final = {
    "postgresql": [
        r"(?P<dollar>\$\$.*?\$\$)",
        r"(?P<tagged>\$(?P<tag>[A-Za-z_]\w*)\$.*?\$(?P=tag)\$)",
        r"(?P<escaped>(?<![\w$])[Ee]'(?:[^'\\]|\\.|'')*')",
        _SINGLE,
        _DOUBLE,
        _LINE,
        _BLOCK,
    ],
    "mysql": [
        r"(?P<executable>/\*!\d*)",
        r"(?P<executable_end>\*/)",
        r"(?P<single>'(?:[^'\\]|\\.|'')*')",
        r'(?P<string>"(?:[^"\\]|\\.|"")*")',
        _BACKTICK,
        r"(?P<line>(?:--\s|\#)[^\n]*)",
        _BLOCK,
    ],
    # SQLite, and any other backend: the SQL standard's quoting, and SQLite's extras.
    "": [_SINGLE, _DOUBLE, _BACKTICK, r"(?P<bracket>\[[^\]]*\])", _LINE, _BLOCK],
}
_BLANKS: Final = {
    dialect: re.compile("|".join(parts), re.DOTALL) for dialect, parts in _DIALECTS.items()
}
_COMMENTS: Final = frozenset({"line", "block", "executable", "executable_end"})
# Quoted names, kept in messages; values never are.
_NAMES: Final = frozenset({"double", "backtick"})

_WORD: Final = re.compile(r"[A-Za-z_][A-Za-z_0-9$]*")
# What a message shows: words, quoted names, "?" for what was blanked, numbers blanked.
_SHOWN: Final = re.compile(r'"(?:[^"]|"")*"|`(?:[^`]|``)*`|[A-Za-z_][\w$]*|(\d[\w.]*)|\S')

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
_NO_READS: Final[frozenset[str]] = frozenset()
# Statements that read unless a part of them writes.
_QUERIES: Final = frozenset({"select", "with", "values", "table"})
# Words that make a read-looking statement write or lock: a data-modifying part of
# WITH, SELECT ... FOR UPDATE/SHARE, LOCK IN SHARE MODE, SELECT ... INTO (a new
# table in PostgreSQL, a file in MySQL), and sequence functions.
_WRITE_WORDS: Final = frozenset(
    {"insert", "update", "delete", "merge", "share", "into", "lock", "nextval", "setval",
     "create", "drop", "alter", "truncate", "grant", "revoke"}
)  # fmt: skip
_EXPLAIN_OPTIONS: Final = frozenset(
    {"analyze", "analyse", "verbose", "costs", "settings", "buffers", "wal", "timing",
     "summary", "format", "text", "json", "xml", "yaml", "true", "false", "on", "off",
     "extended", "partitions", "memory", "serialize", "generic_plan", "query", "plan"}
)  # fmt: skip
# What may follow BEGIN: a transaction's mode, never a procedural block's statements.
_TRANSACTION_MODES: Final = frozenset(
    {"transaction", "work", "deferred", "immediate", "exclusive", "isolation", "level",
     "read", "write", "only", "committed", "uncommitted", "repeatable", "serializable",
     "deferrable", "not"}
)  # fmt: skip
# SET forms that change the server or an account, not the session (MySQL): anywhere
# in the statement (SET @a = 1, GLOBAL x = 2), or as its first word.
_SERVER_SCOPES: Final = frozenset({"global", "persist", "persist_only"})
_ACCOUNT_SETTINGS: Final = frozenset({"password", "default", "resource"})
# SQLite pragmas that read when given an argument: PRAGMA name(value) sets the others.
_PRAGMAS_WITH_ARGUMENTS: Final = frozenset(
    {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
     "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check"}
)  # fmt: skip
# SQLite pragmas that change the database even without an argument.
_WRITING_PRAGMAS: Final = frozenset(
    {"optimize", "wal_checkpoint", "incremental_vacuum", "shrink_memory"}
)


def _dialect(vendor: str) -> str:
    return vendor if vendor in {"postgresql", "mysql"} else ""


def _blank(sql: str, vendor: str, *, keep_names: bool = False) -> str:
    """Return ``sql`` with comments, literals and (unless ``keep_names``) quoted names blanked.

    Comments become a space; literals and names ``?``, so that no word inside them is
    read as a keyword, and no value reaches a message.
    """
    names = _NAMES if keep_names else _NO_READS

    def replace(match: re.Match[str]) -> str:
        kind = match.lastgroup
        if kind in _COMMENTS:
            return " "
        if kind in names:
            return match.group()
        return " ? "

    return _BLANKS[_dialect(vendor)].sub(replace, sql)


def blank_literals(sql: str, vendor: str) -> str:
    """Return ``sql`` as shown to people: literals ``?``, comments dropped, names kept.

    Raw SQL may hold values written into it (and psycopg's composed statements inline
    their ``sql.Literal`` values): none of them is shown.
    """
    return _blank(sql, vendor, keep_names=True).replace(" ? ", "?").strip()


def _statement_is_read(words: list[str], text: str, vendor: str) -> bool:
    first = words[0]
    if first not in _READS and first not in _VENDOR_READS.get(vendor, _NO_READS):
        return False
    check = _CHECKS.get(first)
    return check is None or check(words, text)


def _explain_reads(words: list[str], text: str) -> bool:  # noqa: ARG001 - a check
    # EXPLAIN (and MySQL's DESCRIBE, its synonym) shows a plan without running the
    # statement, unless ANALYZE runs it: then what follows the options must be a
    # query that reads.
    if "analyze" not in words and "analyse" not in words:
        return True
    rest = [word for word in words[1:] if word not in _EXPLAIN_OPTIONS]
    return bool(rest) and rest[0] in _QUERIES and _WRITE_WORDS.isdisjoint(rest)


def _holds_no_write(words: list[str], text: str) -> bool:  # noqa: ARG001 - a check
    return _WRITE_WORDS.isdisjoint(words)


def _begins_a_transaction(words: list[str], text: str) -> bool:  # noqa: ARG001 - a check
    return _TRANSACTION_MODES.issuperset(words[1:])


def _starts_a_transaction(words: list[str], text: str) -> bool:  # noqa: ARG001 - a check
    return words[1:2] == ["transaction"]


def _sets_the_session(words: list[str], text: str) -> bool:  # noqa: ARG001 - a check
    # Session settings read nothing and write nothing; these change the server.
    return _SERVER_SCOPES.isdisjoint(words) and _ACCOUNT_SETTINGS.isdisjoint(words[1:2])


def _pragma_reads(words: list[str], text: str) -> bool:
    if "=" in text or not _WRITING_PRAGMAS.isdisjoint(words):
        return False
    if "(" not in text:
        return True
    # PRAGMA [schema.]name(argument): the name is the last word before the "(".
    named = _WORD.findall(text.split("(", 1)[0])
    return named[-1].lower() in _PRAGMAS_WITH_ARGUMENTS


_CHECKS: Final[dict[str, Callable[[list[str], str], bool]]] = {
    "explain": _explain_reads,
    "describe": _explain_reads,
    "desc": _explain_reads,
    "select": _holds_no_write,
    "with": _holds_no_write,
    "values": _holds_no_write,
    "table": _holds_no_write,
    "declare": _holds_no_write,
    "begin": _begins_a_transaction,
    "start": _starts_a_transaction,
    "set": _sets_the_session,
    "pragma": _pragma_reads,
}


def statement_text(sql: object, connection: BaseDatabaseWrapper) -> str | None:
    """Return ``sql`` as a string (psycopg's composed statements too), or ``None``."""
    if not isinstance(sql, str):
        as_string = getattr(sql, "as_string", None)  # psycopg's sql.Composable
        sql = as_string(connection.connection) if callable(as_string) else None
    return sql if isinstance(sql, str) else None


def refused_part(sql: str, vendor: str) -> str | None:
    """Return the first words of the first statement of ``sql`` that may write, or ``None``.

    ``vendor`` is Django's ``connection.vendor``. ``None`` means every statement only
    reads; a statement that cannot be understood may write. The words come with
    literals, numbers and comments blanked: enough to recognise the statement in a
    message, never a value it carries.
    """
    parts = _blank(sql, vendor).split(";")
    index = _first_writing(parts, vendor)
    if index is None:
        return None
    if index < 0:
        return "(an empty statement)"
    # Shown with its quoted names, unless one holds a ";" (then as classified).
    shown = _blank(sql, vendor, keep_names=True).split(";")
    return _first_words(shown[index] if len(shown) == len(parts) else parts[index])


def _first_writing(parts: list[str], vendor: str) -> int | None:
    """The index of the first of blanked ``parts`` that may write; ``None`` if all read.

    -1 when there is no statement at all (only blanks and ``;``): that may write too.
    """
    if not any(part.strip() for part in parts):
        return -1
    for index, part in enumerate(parts):
        words = [word.lower() for word in _WORD.findall(part)]
        if part.strip() and not (words and _statement_is_read(words, part, vendor)):
            return index
    return None


def may_write(sql: str, vendor: str) -> bool:
    """Return whether a statement of ``sql`` may write, as :func:`refused_part` decides.

    For pinning reads after a write, on every statement on a primary's connection:
    without the words a message shows, and remembered for the last
    ``_KNOWN_MAX`` texts (Django sends the same text for each query of one shape; the
    parameters travel apart), so a repeated statement costs a dict lookup instead of
    a parse (9 µs for a short SELECT, 34 µs for an INSERT).
    """
    key = (sql, vendor)
    known = _KNOWN.get(key)
    if known is None:
        known = _first_writing(_blank(sql, vendor).split(";"), vendor) is not None
        if len(sql) <= _KNOWN_LENGTH:
            with _KNOWING:
                if len(_KNOWN) >= _KNOWN_MAX:
                    del _KNOWN[next(iter(_KNOWN))]
                _KNOWN[key] = known
    return known


#: What :func:`may_write` found, by (text, vendor), oldest first; texts up to
#: ``_KNOWN_LENGTH`` characters.
_KNOWN: dict[tuple[str, str], bool] = {}
_KNOWN_MAX: Final = 1024
_KNOWN_LENGTH: Final = 4096
_KNOWING = threading.Lock()


def _first_words(statement: str, count: int = 3) -> str:
    tokens = ["?" if match.group(1) else match.group() for match in _SHOWN.finditer(statement)]
    shown = " ".join(tokens[:count])
    return shown if len(tokens) <= count else f"{shown} ..."
