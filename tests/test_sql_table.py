"""prevent_writes() on raw SQL: the statement table, run against the real server.

Each row is a script of statements run in order inside prevent_writes(), on the
backend under test (DYNROUTE_TEST_DB), through a cursor of the test's connection.
"allowed" rows must run on the server and succeed; "refused" rows must raise
WriteForbiddenError before reaching it: a recording execute_wrapper placed after
dynroute's hook (as a user's own would be) must never see them, and the table's data
must be intact at the end.
"""

# ruff: noqa: S608, E501 - a table of SQL statements, one row per line, on purpose

from __future__ import annotations

import pytest
from django.db import connection

from dynroute import prevent_writes
from dynroute.core import _sql, may_write, refused_part
from dynroute.exceptions import WriteForbiddenError
from tests.testapp.models import Item

pytestmark = pytest.mark.django_db(transaction=True)

ALLOWED = "allowed"
REFUSED = "refused"

T = "testapp_item"

# (what, the script, allowed or refused): every backend.
COMMON = [
    ("a plain select", ["SELECT 1"], ALLOWED),
    ("lower case", [f"select count(*) from {T}"], ALLOWED),
    ("a write word in a literal", [f"SELECT id FROM {T} WHERE name = 'DELETE FROM {T}'"], ALLOWED),
    ("a doubled quote and ; in a literal", [f"SELECT 'it''s; DROP TABLE {T}'"], ALLOWED),
    ("a leading block comment", ["/* a comment */ SELECT 1"], ALLOWED),
    ("a leading line comment", ["-- a comment\nSELECT 1"], ALLOWED),
    ("a trailing semicolon", ["SELECT 1;"], ALLOWED),
    ("WITH reading only", ["WITH x AS (SELECT 1 AS n) SELECT n FROM x"], ALLOWED),
    ("a subquery", [f"SELECT id FROM {T} WHERE id IN (SELECT id FROM {T})"], ALLOWED),
    ("UNION", ["SELECT 1 UNION SELECT 2"], ALLOWED),
    ("REPLACE() the function", [f"SELECT REPLACE(name, 'a', 'b') FROM {T}"], ALLOWED),
    ("ORDER BY and LIMIT", [f"SELECT name FROM {T} ORDER BY id LIMIT 1"], ALLOWED),
    ("EXPLAIN a select", ["EXPLAIN SELECT 1"], ALLOWED),
    ("EXPLAIN a delete, without running it", [f"EXPLAIN DELETE FROM {T}"], ALLOWED),
    ("VALUES", ["VALUES (1)"], ALLOWED),
    ("BEGIN, COMMIT", ["BEGIN", "COMMIT"], ALLOWED),
    ("BEGIN, ROLLBACK", ["BEGIN", "ROLLBACK"], ALLOWED),
    (
        "savepoints",
        [
            "BEGIN",
            "SAVEPOINT s1",
            "RELEASE SAVEPOINT s1",
            "SAVEPOINT s2",
            "ROLLBACK TO SAVEPOINT s2",
            "ROLLBACK",
        ],
        ALLOWED,
    ),
    ("INSERT", [f"INSERT INTO {T} (name) VALUES ('x')"], REFUSED),
    ("UPDATE", [f"UPDATE {T} SET name = 'x'"], REFUSED),
    ("DELETE", [f"DELETE FROM {T}"], REFUSED),
    ("delete, lower case, indented", [f"   delete from {T}"], REFUSED),
    ("CREATE TABLE", ["CREATE TABLE dynroute_new (id int)"], REFUSED),
    ("CREATE INDEX", [f"CREATE INDEX dynroute_ix ON {T} (name)"], REFUSED),
    ("DROP TABLE", [f"DROP TABLE {T}"], REFUSED),
    ("ALTER TABLE", [f"ALTER TABLE {T} ADD COLUMN c int"], REFUSED),
    ("a stacked delete", [f"SELECT 1; DELETE FROM {T}"], REFUSED),
    ("a stacked delete, no space", [f"SELECT 1;DELETE FROM {T}"], REFUSED),
    ("a stacked statement with no write word", ["SELECT 1; VACUUM"], REFUSED),
    ("a block comment hiding a delete", [f"/* SELECT */ DELETE FROM {T}"], REFUSED),
    ("a line comment hiding a delete", [f"-- SELECT\nDELETE FROM {T}"], REFUSED),
    ("a delete in parentheses", [f"(DELETE FROM {T})"], REFUSED),
    ("SELECT FOR UPDATE", [f"SELECT * FROM {T} FOR UPDATE"], REFUSED),
    ("SELECT FOR SHARE", [f"SELECT * FROM {T} FOR SHARE"], REFUSED),
    ("WITH ... DELETE", [f"WITH x AS (DELETE FROM {T} RETURNING id) SELECT * FROM x"], REFUSED),
    (
        "WITH ... INSERT",
        [f"WITH x AS (SELECT 1) INSERT INTO {T} (name) SELECT 'y' FROM x"],
        REFUSED,
    ),
    ("EXPLAIN ANALYZE of a delete", [f"EXPLAIN ANALYZE DELETE FROM {T}"], REFUSED),
    ("REPLACE INTO", [f"REPLACE INTO {T} (id, name) VALUES (1, 'x')"], REFUSED),
    ("SELECT INTO", [f"SELECT * INTO dynroute_copy FROM {T}"], REFUSED),
    ("an empty statement", [""], REFUSED),
    ("only a semicolon", [";"], REFUSED),
    ("VACUUM", ["VACUUM"], REFUSED),
    ("ANALYZE", ["ANALYZE"], REFUSED),
    ("a write after a committed select", [f"BEGIN; SELECT 1; COMMIT; DELETE FROM {T}"], REFUSED),
]

PER_BACKEND = {
    "postgresql": [
        ("SHOW", ["SHOW search_path"], ALLOWED),
        ("parenthesised", ["(SELECT 1)"], ALLOWED),
        ("SET and RESET", ["SET statement_timeout = 0", "RESET statement_timeout"], ALLOWED),
        ("EXPLAIN with options", ["EXPLAIN (COSTS OFF) SELECT 1"], ALLOWED),
        ("EXPLAIN ANALYZE of a select", ["EXPLAIN ANALYZE SELECT 1"], ALLOWED),
        (
            "EXPLAIN ANALYZE of a prepared statement",
            ["EXPLAIN ANALYZE EXECUTE dynroute_plan"],
            REFUSED,
        ),
        ("EXPLAIN of a select naming a column analyze", ["EXPLAIN SELECT 1 AS analyze"], ALLOWED),
        (
            "EXPLAIN ANALYSE, British spelling, of a delete",
            [f"EXPLAIN ANALYSE DELETE FROM {T}"],
            REFUSED,
        ),
        ("START TRANSACTION READ ONLY", ["START TRANSACTION READ ONLY", "ROLLBACK"], ALLOWED),
        ("TABLE", [f"TABLE {T}"], ALLOWED),
        ("START TRANSACTION, END", ["START TRANSACTION", "END"], ALLOWED),
        (
            "a cursor",
            [
                "BEGIN",
                "DECLARE c CURSOR FOR SELECT 1",
                "FETCH 1 FROM c",
                "MOVE 0 IN c",
                "CLOSE c",
                "COMMIT",
            ],
            ALLOWED,
        ),
        ("a dollar-quoted literal", ["SELECT $$ ; DELETE FROM x $$"], ALLOWED),
        ("a tagged dollar-quoted literal", ["SELECT $q$ it's $$; DELETE $q$"], ALLOWED),
        ("an escaped quote in E''", [f"SELECT E'\\'; DELETE FROM {T}; --'"], ALLOWED),
        (
            "a word ending in e before a quote is no E''",
            [f"SELECT 1 WHERE 'a' LIKE'a\\'; DELETE FROM {T}; --'"],
            REFUSED,
        ),
        ("a quoted identifier named like a write", ['SELECT 1 AS "delete"'], ALLOWED),
        ("FOR NO KEY UPDATE", [f"SELECT * FROM {T} FOR NO KEY UPDATE"], REFUSED),
        ("FOR KEY SHARE", [f"SELECT * FROM {T} FOR KEY SHARE"], REFUSED),
        ("nextval()", [f"SELECT nextval('{T}_id_seq')"], REFUSED),
        ("setval()", [f"SELECT setval('{T}_id_seq', 1000)"], REFUSED),
        ("COPY", [f"COPY {T} TO STDOUT"], REFUSED),
        ("DO", [f"DO $$ BEGIN DELETE FROM {T}; END $$"], REFUSED),
        ("LOCK TABLE", [f"LOCK TABLE {T}"], REFUSED),
        ("NOTIFY", ["NOTIFY dynroute"], REFUSED),
        (
            "EXPLAIN (ANALYZE) of an update",
            [f"EXPLAIN (ANALYZE, FORMAT JSON) UPDATE {T} SET name = 'x'"],
            REFUSED,
        ),
        (
            "a tag that ends a literal early",
            [f"SELECT $a$ $$ ' $a$; DELETE FROM {T}; --'"],
            REFUSED,
        ),
        ("TRUNCATE", [f"TRUNCATE {T}"], REFUSED),
        ("CALL", ["CALL dynroute_procedure()"], REFUSED),
        (
            "MERGE",
            [f"MERGE INTO {T} t USING {T} s ON t.id = s.id WHEN MATCHED THEN DELETE"],
            REFUSED,
        ),
    ],
    "mysql": [
        ("SHOW TABLES", ["SHOW TABLES"], ALLOWED),
        ("parenthesised", ["(SELECT 1)"], ALLOWED),
        ("SHOW VARIABLES", ["SHOW VARIABLES LIKE 'version'"], ALLOWED),
        ("DESCRIBE", [f"DESCRIBE {T}"], ALLOWED),
        ("DESC", [f"DESC {T}"], ALLOWED),
        ("SET a user variable", ["SET @dynroute = 1"], ALLOWED),
        ("SET NAMES", ["SET NAMES utf8mb4"], ALLOWED),
        ("SET a variable from PASSWORD()", ["SET @dynroute = PASSWORD('x')"], ALLOWED),
        ("START TRANSACTION READ ONLY", ["START TRANSACTION READ ONLY", "ROLLBACK"], ALLOWED),
        ("START TRANSACTION", ["START TRANSACTION", "ROLLBACK"], ALLOWED),
        ("a hash comment", ["# a comment\nSELECT 1"], ALLOWED),
        ("a backslash-escaped quote", [f"SELECT 'a\\'; DELETE FROM {T}; -- '"], ALLOWED),
        ("a backticked identifier", [f"SELECT `name` FROM `{T}`"], ALLOWED),
        ("EXPLAIN FORMAT=JSON", ["EXPLAIN FORMAT=JSON SELECT 1"], ALLOWED),
        ("DESCRIBE a select", ["DESCRIBE SELECT 1"], ALLOWED),
        ("DESCRIBE ANALYZE of an update", [f"DESCRIBE ANALYZE UPDATE {T} SET name = 'x'"], REFUSED),
        (
            "SET a variable, then GLOBAL",
            ["SET @dynroute = 1, GLOBAL max_connections = 100"],
            REFUSED,
        ),
        ("SET a @@global variable", ["SET @dynroute = 1, @@global.max_connections = 100"], REFUSED),
        ("SET DEFAULT ROLE", ["SET DEFAULT ROLE ALL TO root"], REFUSED),
        ("SET a variable to DEFAULT", ["SET SESSION sql_mode = DEFAULT"], ALLOWED),
        ("an executable comment", [f"/*!40000 DELETE FROM {T} */"], REFUSED),
        ("LOCK IN SHARE MODE", [f"SELECT * FROM {T} LOCK IN SHARE MODE"], REFUSED),
        ("SET GLOBAL", ["SET GLOBAL max_connections = 100"], REFUSED),
        ("SET PASSWORD", ["SET PASSWORD = PASSWORD('x')"], REFUSED),
        ("SELECT INTO a variable", ["SELECT 1 INTO @dynroute"], REFUSED),
        ("START SLAVE", ["START SLAVE"], REFUSED),
        ("RENAME TABLE", [f"RENAME TABLE {T} TO dynroute_gone"], REFUSED),
        ("OPTIMIZE TABLE", [f"OPTIMIZE TABLE {T}"], REFUSED),
        ("LOAD DATA", [f"LOAD DATA INFILE '/tmp/x' INTO TABLE {T}"], REFUSED),
        ("INSERT IGNORE", [f"INSERT IGNORE INTO {T} (name) VALUES ('x')"], REFUSED),
        ("a stacked delete after a hash comment", [f"SELECT 1 # x\n; DELETE FROM {T}"], REFUSED),
        ("TRUNCATE", [f"TRUNCATE TABLE {T}"], REFUSED),
        ("HANDLER", [f"HANDLER {T} OPEN"], REFUSED),
    ],
    "sqlite": [
        ("PRAGMA table_info", [f"PRAGMA table_info({T})"], ALLOWED),
        ("PRAGMA read", ["PRAGMA foreign_keys"], ALLOWED),
        ("PRAGMA user_version", ["PRAGMA user_version"], ALLOWED),
        ("PRAGMA integrity_check", ["PRAGMA integrity_check"], ALLOWED),
        ("a bracketed identifier", [f"SELECT * FROM [{T}]"], ALLOWED),
        ("a backticked identifier", [f"SELECT `name` FROM `{T}`"], ALLOWED),
        ("BEGIN IMMEDIATE", ["BEGIN IMMEDIATE", "ROLLBACK"], ALLOWED),
        ("BEGIN DEFERRED, END", ["BEGIN DEFERRED", "END"], ALLOWED),
        ("a quoted identifier named like a write", ['SELECT 1 AS "delete"'], ALLOWED),
        ("PRAGMA =", ["PRAGMA foreign_keys = OFF"], REFUSED),
        ("PRAGMA name(value)", ["PRAGMA user_version(42)"], REFUSED),
        ("PRAGMA journal_mode(value)", ["PRAGMA journal_mode(DELETE)"], REFUSED),
        ("PRAGMA index_list(table)", [f"PRAGMA index_list({T})"], ALLOWED),
        ("PRAGMA schema.table_info(table)", [f"PRAGMA main.table_info({T})"], ALLOWED),
        ("PRAGMA schema.name(value)", ["PRAGMA main.user_version(42)"], REFUSED),
        ("BEGIN TRANSACTION", ["BEGIN TRANSACTION", "COMMIT"], ALLOWED),
        ("PRAGMA journal_mode=", ["PRAGMA journal_mode=WAL"], REFUSED),
        ("PRAGMA optimize", ["PRAGMA optimize"], REFUSED),
        ("PRAGMA wal_checkpoint", ["PRAGMA wal_checkpoint"], REFUSED),
        ("ATTACH", ["ATTACH DATABASE '/tmp/dynroute-attached.sqlite3' AS x"], REFUSED),
        ("DETACH", ["DETACH DATABASE x"], REFUSED),
        ("REINDEX", ["REINDEX"], REFUSED),
        ("INSERT OR REPLACE", [f"INSERT OR REPLACE INTO {T} (id, name) VALUES (1, 'x')"], REFUSED),
        (
            "an upsert",
            [f"INSERT INTO {T} (id, name) VALUES (1, 'x') ON CONFLICT DO NOTHING"],
            REFUSED,
        ),
        (
            "CREATE TRIGGER",
            [f"CREATE TRIGGER t AFTER INSERT ON {T} BEGIN DELETE FROM {T}; END"],
            REFUSED,
        ),
        ("CREATE VIEW", [f"CREATE VIEW v AS SELECT * FROM {T}"], REFUSED),
    ],
}


def rows(vendor: str) -> list[tuple[str, list[str], str]]:
    """The rows for a backend: the common ones, then its own."""
    return COMMON + PER_BACKEND[vendor]


def test_the_table_is_large_enough_for_each_backend():
    """At least 40 statements per backend, both outcomes well represented."""
    for vendor in PER_BACKEND:
        statements = [(sql, outcome) for _, script, outcome in rows(vendor) for sql in script]
        assert len(statements) >= 40, vendor
        assert sum(outcome == ALLOWED for _, outcome in statements) >= 20, vendor
        assert sum(outcome == REFUSED for _, outcome in statements) >= 20, vendor


@pytest.fixture
def seeded():
    """Two items, whose survival shows that nothing was written."""
    Item.objects.bulk_create([Item(name="one"), Item(name="two")])
    return sorted(Item.objects.values_list("id", "name"))


def test_each_statement_is_allowed_or_refused_as_the_table_says(seeded):
    """Allowed statements run on the server; refused ones never reach it."""
    reached: list[str] = []

    def record(execute, sql, params, many, context):
        reached.append(sql)
        return execute(sql, params, many, context)

    wrong: list[str] = []
    with connection.execute_wrapper(record), connection.cursor() as cursor:
        for what, script, outcome in rows(connection.vendor):
            for sql in script:
                reached.clear()
                try:
                    with prevent_writes():
                        cursor.execute(sql)
                except WriteForbiddenError:
                    if outcome != REFUSED or reached:
                        wrong.append(
                            f"{what}: {sql!r} refused{' after reaching the server' if reached else ''}"
                        )
                    break  # the rest of a refused script is not run
                else:
                    if outcome != ALLOWED:
                        wrong.append(f"{what}: {sql!r} allowed")
                        break
                    assert reached == [sql]
    assert wrong == []
    assert sorted(Item.objects.values_list("id", "name")) == seeded
    tables = connection.introspection.table_names()
    assert T in tables
    assert not {"dynroute_new", "dynroute_copy", "dynroute_gone", "v"} & set(tables)


@pytest.mark.parametrize("vendor", sorted(PER_BACKEND))
def test_the_classifier_gives_each_backends_table_without_a_server(vendor):
    """The same table, every backend's rows, classified directly (no server needed).

    What the server run above shows for the backend under test, this shows for all
    three in every run, whichever backend the suite uses.
    """
    wrong = []
    for what, script, outcome in rows(vendor):
        verdicts = [refused_part(sql, vendor) is None for sql in script]
        allowed = all(verdicts)
        if allowed != (outcome == ALLOWED):
            wrong.append(f"{what}: {script!r}")
    assert wrong == []


@pytest.mark.parametrize("vendor", sorted(PER_BACKEND))
def test_may_write_agrees_with_the_classifier_and_remembers(vendor, monkeypatch):
    """may_write() (the pin after a write) says what refused_part() says, twice over.

    The second time from what it remembers: parsing again would fail here.
    """
    monkeypatch.setattr(_sql, "_KNOWN", {})
    statements = [sql for _, script, _ in rows(vendor) for sql in script]
    statements += ["", " ; ", "SELECT 1;; DROP TABLE t"]
    expected = [refused_part(sql, vendor) is not None for sql in statements]
    assert [may_write(sql, vendor) for sql in statements] == expected
    assert any(expected)
    assert not all(expected)

    def parse(*args: object, **kwargs: object) -> str:
        msg = "parsed again"
        raise AssertionError(msg)

    monkeypatch.setattr(_sql, "_blank", parse)
    assert [may_write(sql, vendor) for sql in statements] == expected


def test_may_write_remembers_a_bounded_number_of_short_texts(monkeypatch):
    """The oldest text is forgotten first; a text longer than the limit is never kept."""
    monkeypatch.setattr(_sql, "_KNOWN", {})
    monkeypatch.setattr(_sql, "_KNOWN_MAX", 2)
    monkeypatch.setattr(_sql, "_KNOWN_LENGTH", 20)
    at_the_limit, too_long = "SELECT 1234567890123", "SELECT 12345678901234"  # 20, 21
    for sql in ("SELECT 1", "DELETE FROM t", at_the_limit, too_long):
        may_write(sql, "sqlite")
    remembered = _sql._KNOWN
    assert remembered == {("DELETE FROM t", "sqlite"): True, (at_the_limit, "sqlite"): False}


@pytest.mark.parametrize(
    ("vendor", "sql", "shown"),
    [
        ("postgresql", 'UPDATE "testapp_item" SET "name" = %s', 'UPDATE "testapp_item" SET ...'),
        ("sqlite", 'INSERT INTO "a" VALUES (1)', 'INSERT INTO "a" ...'),
        ("mysql", "INSERT INTO `a` (`b`) VALUES ('s3cret')", "INSERT INTO `a` ..."),
        ("mysql", 'INSERT INTO t VALUES ("s3cret")', "INSERT INTO t ..."),
        ("mysql", 'DELETE "s3cret" FROM t', "DELETE ? FROM ..."),
        ("postgresql", "DELETE 's3cret' x", "DELETE ? x"),
        ("postgresql", "SELECT 1; UPDATE t SET a = 'x'", "UPDATE t SET ..."),
        ("sqlite", "INSERT INTO t(card)VALUES(4111111111111111)", "INSERT INTO t ..."),
        ("sqlite", "DELETE 4111111111111111 x", "DELETE ? x"),
        ("postgresql", "UPDATE t SET a = ARRAY['s3cret']", "UPDATE t SET ..."),
        ("postgresql", "DELETE ARRAY['s3cret']", "DELETE ARRAY [ ..."),
        ("postgresql", "DELETE[4111111111111111]", "DELETE [ ? ..."),
        ("sqlite", 'DELETE "s3cret-looking name" x', 'DELETE "s3cret-looking name" x'),
        ("postgresql", 'SELECT 1; UPDATE "a" SET x = 1', 'UPDATE "a" SET ...'),
        ("postgresql", 'SELECT 1; UPDATE "a;b" SET x = 1', "UPDATE ? SET ..."),
        ("postgresql", "SELECT 1;; DROP TABLE t", "DROP TABLE t"),
        ("postgresql", "/* x */ DROP TABLE t", "DROP TABLE t"),
        ("postgresql", "", "(an empty statement)"),
        ("sqlite", " ; ", "(an empty statement)"),
        ("postgresql", "SELECT 1", None),
        ("mysql", "/*!40000 SELECT 1 */", None),
    ],
)
def test_the_words_shown_keep_names_and_never_values(vendor, sql, shown):
    """Messages show the first three words, quoted names kept, literals blanked."""
    assert refused_part(sql, vendor) == shown


def test_another_backend_gets_the_common_allow_list():
    """A vendor dynroute has no list for (Oracle, a third-party backend): common reads."""
    assert refused_part("SELECT 1 FROM dual", "oracle") is None
    assert refused_part("DESCRIBE t", "oracle") == "DESCRIBE t"
    assert refused_part("PRAGMA user_version", "oracle") == "PRAGMA user_version"
    assert refused_part("BEGIN DELETE FROM t; END;", "oracle") == "BEGIN DELETE FROM ..."
    assert refused_part("BEGIN ISOLATION LEVEL SERIALIZABLE", "oracle") is None
    assert refused_part("BEGIN NULL; END;", "oracle") == "BEGIN NULL"
