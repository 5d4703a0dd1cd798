"""CQL2 text filters compiled to parameterised SQL, run against a real SQLite table."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offmaps.errors import FeaturesError, InvalidFilterError, UnsupportedFilterError
from offmaps.features import (
    MAX_FILTER_DEPTH,
    MAX_FILTER_LENGTH,
    FieldType,
    SQLDialect,
    SQLFilter,
    compile_filter,
)

FIELDS: dict[str, FieldType] = {
    "name": FieldType.TEXT,
    "pop": FieldType.INTEGER,
    "area": FieldType.REAL,
    "open": FieldType.BOOLEAN,
    "built": FieldType.DATE,
    "seen": FieldType.DATETIME,
    "odd name": FieldType.TEXT,
}

# id, name, pop, area, open, built, seen, "odd name"
ROWS = [
    (1, "Alpha", 10, 1.5, 1, "2020-01-01", "2020-01-01T10:00:00.000Z", "a b"),
    (2, "alpine", 20, 2.5, 0, "2021-06-15", "2021-06-15T12:30:00.000Z", None),
    (3, "Beta", None, 3.0, 1, None, None, "x"),
    (4, "x' OR 1=1 --", 40, 0.5, 0, "2019-12-31", "2019-12-31T23:59:59.999Z", "y"),
    (5, "Ünïcødé 名前", 50, 10.0, 1, "2022-02-02", "2022-02-02T00:00:00.000Z", "z"),
    (6, "a%b_c*d?e[f", 60, None, None, "2020-01-01", None, None),
]


def make_table() -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:")
    connection.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, pop INTEGER, area REAL, open INTEGER, "
        'built TEXT, seen TEXT, "odd name" TEXT)'
    )
    connection.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)", ROWS)
    return connection


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    connection = make_table()
    yield connection
    connection.close()


def select(db: sqlite3.Connection, text: str) -> list[int]:
    compiled = compile_filter(text, FIELDS, dialect=SQLDialect.SQLITE)
    rows = db.execute(f"SELECT id FROM t WHERE {compiled.sql} ORDER BY id", compiled.params)
    return [row[0] for row in rows]


def table_intact(db: sqlite3.Connection) -> bool:
    count: int = db.execute("SELECT count(*) FROM t").fetchone()[0]
    return count == len(ROWS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name = 'Alpha'", [1]),
        ("name <> 'Alpha'", [2, 3, 4, 5, 6]),
        ("pop > 20", [4, 5, 6]),
        ("pop >= 20", [2, 4, 5, 6]),
        ("pop < 20", [1]),
        ("pop <= 20", [1, 2]),
        ("area = 2.5", [2]),
        ("area > 2", [2, 3, 5]),
        ("pop = 10.0", [1]),
        ("open = true", [1, 3, 5]),
        ("open = false", [2, 4]),
        ("pop > 10 AND area < 3", [2, 4]),
        ("pop = 10 OR pop = 50", [1, 5]),
        ("NOT (pop = 10)", [2, 4, 5, 6]),
        ("pop IS NULL", [3]),
        ("pop IS NOT NULL", [1, 2, 4, 5, 6]),
        ("pop BETWEEN 20 AND 50", [2, 4, 5]),
        ("pop NOT BETWEEN 20 AND 50", [1, 6]),
        ("pop IN (10, 40, 99)", [1, 4]),
        ("pop NOT IN (10, 40)", [2, 5, 6]),
        ("name IN ('Beta', 'nobody')", [3]),
        ("pop + 5 > 40", [4, 5, 6]),
        ("pop * 2 = 80", [4]),
        ("pop - area >= 40", [5]),
        ("pop / 10 = 2", [2]),
        ("pop > -45", [1, 2, 4, 5, 6]),
        ("pop > area * 10", [4]),
        ("built = DATE('2020-01-01')", [1, 6]),
        ("built > DATE('2020-01-01')", [2, 5]),
        ("seen > TIMESTAMP('2020-01-01T10:00:00Z')", [2, 5]),
        ("seen >= TIMESTAMP('2020-01-01T10:00:00Z')", [1, 2, 5]),
        ("seen < TIMESTAMP('2020-01-01T01:00:00+01:00')", [4]),
        ("\"odd name\" = 'a b'", [1]),
        ("INCLUDE", [1, 2, 3, 4, 5, 6]),
        ("EXCLUDE", []),
    ],
)
def test_compiled_filters_select_the_expected_rows(
    db: sqlite3.Connection, text: str, expected: list[int]
) -> None:
    assert select(db, text) == expected


def test_and_or_chains_keep_their_grouping(db: sqlite3.Connection) -> None:
    assert select(db, "pop = 10 OR (pop = 20 AND area = 2.5)") == [1, 2]
    assert select(db, "(pop = 10 OR pop = 20) AND area = 2.5") == [2]
    # pygeofilter 0.4 gives AND and OR one precedence, left to right
    assert select(db, "pop = 10 OR pop = 20 AND area = 2.5") == [2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name LIKE 'Al%'", [1]),
        ("name LIKE 'al%'", [2]),
        ("name NOT LIKE 'Al%'", [2, 3, 4, 5, 6]),
        ("name LIKE '_eta'", [3]),
        ("name LIKE '%名前'", [5]),
        ("name LIKE 'a\\%b\\_c*d?e[f'", [6]),
        ("name LIKE 'a%b%'", [6]),
        ("name LIKE 'a_b%'", [6]),
        ("name LIKE '*'", []),
        ("CASEI(name) LIKE CASEI('AL%')", [1, 2]),
        ("CASEI(name) = CASEI('BETA')", [3]),
        ("name LIKE CASEI('ALPINE')", [2]),
    ],
)
def test_like_is_case_sensitive_with_cql2_wildcards(
    db: sqlite3.Connection, text: str, expected: list[int]
) -> None:
    assert select(db, text) == expected


def test_like_pattern_cannot_end_with_the_escape_character() -> None:
    with pytest.raises(InvalidFilterError, match="escape"):
        compile_filter("name LIKE 'a\\'", FIELDS, dialect=SQLDialect.SQLITE)


def test_values_are_bound_never_inlined() -> None:
    compiled = compile_filter("name = 'Alpha' AND pop > 3", FIELDS, dialect=SQLDialect.SQLITE)
    assert compiled == SQLFilter('(("name" = ?) AND ("pop" > ?))', ("Alpha", 3))
    assert "Alpha" not in compiled.sql


def test_sql_filter_is_frozen() -> None:
    compiled = compile_filter("pop = 1", FIELDS, dialect=SQLDialect.SQLITE)
    with pytest.raises(AttributeError):
        compiled.sql = "1 = 1"  # type: ignore[misc]


# --- postgres: SQL text and parameters only --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sql", "params"),
    [
        ("name = 'Alpha'", '("name" = %s)', ("Alpha",)),
        (
            "pop BETWEEN 1 AND 2 AND open = true",
            '(("pop" BETWEEN %s AND %s) AND ("open" = %s))',
            (1, 2, True),
        ),
        ("pop IN (1, 2)", '("pop" IN (%s, %s))', (1, 2)),
        ("name LIKE 'a_b%'", "(\"name\" LIKE %s ESCAPE '\\')", ("a_b%",)),
        (
            "CASEI(name) LIKE CASEI('A%')",
            "(lower(\"name\") LIKE lower(%s) ESCAPE '\\')",
            ("A%",),
        ),
        ("built = DATE('2020-01-01')", '("built" = %s)', (date(2020, 1, 1),)),
        (
            "seen > TIMESTAMP('2020-01-01T01:00:00+01:00')",
            '("seen" > %s)',
            (datetime(2020, 1, 1, tzinfo=UTC),),
        ),
        ('"odd name" IS NULL', '("odd name" IS NULL)', ()),
    ],
)
def test_postgres_sql_and_params(text: str, sql: str, params: tuple[object, ...]) -> None:
    assert compile_filter(text, FIELDS, dialect=SQLDialect.POSTGRES) == SQLFilter(sql, params)


def test_postgres_doubles_percent_signs_in_identifiers() -> None:
    fields = {"100%": FieldType.REAL}
    compiled = compile_filter('"100%" > 1', fields, dialect=SQLDialect.POSTGRES)
    assert compiled == SQLFilter('("100%%" > %s)', (1,))
    sqlite = compile_filter('"100%" > 1', fields, dialect=SQLDialect.SQLITE)
    assert sqlite == SQLFilter('("100%" > ?)', (1,))


# --- errors -----------------------------------------------------------------------------------


def test_unknown_field_names_the_field_and_the_known_ones() -> None:
    with pytest.raises(InvalidFilterError) as caught:
        compile_filter("colour = 'red'", FIELDS, dialect=SQLDialect.SQLITE)
    assert caught.value.field == "colour"
    message = str(caught.value)
    assert "'colour'" in message
    assert "area, built, name" in message


@pytest.mark.parametrize(
    "text",
    [
        "name = 1",
        "pop = 'ten'",
        "open = 1",
        "built = TIMESTAMP('2020-01-01T00:00:00Z')",
        "pop BETWEEN 'a' AND 'b'",
        "pop IN (1, 'two')",
        "name + 1 = 2",
        "pop LIKE '1%'",
        "CASEI(pop) = '1'",
        "name LIKE name",
        "pop = 99999999999999999999999",
        "area = 1e999",
    ],
)
def test_type_mismatches_are_invalid(text: str) -> None:
    with pytest.raises(InvalidFilterError):
        compile_filter(text, FIELDS, dialect=SQLDialect.SQLITE)


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [("name = 'x", 1, 8), ("pop >", 1, None), ("pop = = 1", 1, 7), ("pop = 1 AND = 1", 1, 13)],
)
def test_syntax_errors_carry_a_position_and_no_lark_traceback(
    text: str, line: int, column: int | None
) -> None:
    with pytest.raises(InvalidFilterError) as caught:
        compile_filter(text, FIELDS, dialect=SQLDialect.SQLITE)
    error = caught.value
    assert error.line == line
    if column is not None:
        assert error.column == column
    assert error.__cause__ is None
    assert error.__suppress_context__
    message = str(error)
    assert message.startswith("invalid CQL2 filter: unexpected")
    assert "\n" not in message
    assert "Expected one of" not in message


@pytest.mark.parametrize(
    "text", ["pop = -name", "built = DATE('2020-13-01')", "seen = TIMESTAMP('2020-02-30T00:00Z')"]
)
def test_bad_values_are_invalid(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InvalidFilterError):
        compile_filter(text, FIELDS, dialect=SQLDialect.SQLITE)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    "text",
    [
        "S_INTERSECTS(geom, POINT(1 2))",
        "S_WITHIN(geom, ENVELOPE(0 1 0 1))",
        "BBOX(geom, 0, 0, 1, 1)",
        "pop = 1 AND S_DISJOINT(geom, POINT(0 0))",
        "seen T_AFTER TIMESTAMP('2020-01-01T00:00:00Z')",
        "ACCENTI(name) = 'a'",
        "upper(name) = 'A'",
    ],
)
def test_unsupported_constructs(text: str) -> None:
    with pytest.raises(UnsupportedFilterError):
        compile_filter(text, FIELDS, dialect=SQLDialect.SQLITE)


def test_errors_belong_to_the_features_domain() -> None:
    assert issubclass(InvalidFilterError, FeaturesError)
    assert issubclass(UnsupportedFilterError, FeaturesError)


# --- hostile input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name = 'x'' OR 1=1 --'", None),
        ("name = 'x'' OR 1=1 --", None),
        ("name = 'x'' OR ''1''=''1'", None),
        ("name = 'x\\' OR 1=1 --'", None),
        ("name = 'x'' OR 1=1 --'' OR pop = 10", None),
        ("name = 'x'' OR 1=1 --' OR pop = 10", None),
        ("name LIKE 'x%'", [4]),
        ("name = 'Ünïcødé 名前'", [5]),
        ("name = '\u202e\ufeff'", []),
        ("name = 'a'; DROP TABLE t; --", None),
    ],
)
def test_injection_attempts_are_bound_or_rejected(
    db: sqlite3.Connection, text: str, expected: list[int] | None
) -> None:
    if expected is None:
        with pytest.raises(InvalidFilterError):
            select(db, text)
    else:
        assert select(db, text) == expected
    assert table_intact(db)


@pytest.mark.parametrize(
    "text",
    [
        '"name; DROP TABLE t" = 1',
        '"name"" = 1; DROP TABLE t; --" = 1',
        "\"Name\" = 'Alpha'",
        "\"name\x00\" = 'Alpha'",
        "name = 'Alpha\x00'",
        "name = '\udcff'",
    ],
)
def test_hostile_identifiers_and_text_are_rejected(db: sqlite3.Connection, text: str) -> None:
    with pytest.raises(InvalidFilterError):
        select(db, text)
    assert table_intact(db)


def test_huge_string_literal_within_the_limit_is_bound(db: sqlite3.Connection) -> None:
    literal = "x" * (MAX_FILTER_LENGTH - len("name = ''"))
    assert select(db, f"name = '{literal}'") == []


def test_text_over_the_length_limit_is_rejected() -> None:
    literal = "x" * MAX_FILTER_LENGTH
    with pytest.raises(InvalidFilterError, match="too long"):
        compile_filter(f"name = '{literal}'", FIELDS, dialect=SQLDialect.SQLITE)


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_filter_is_invalid(text: str) -> None:
    with pytest.raises(InvalidFilterError, match="empty"):
        compile_filter(text, FIELDS, dialect=SQLDialect.SQLITE)


def test_nesting_up_to_the_limit_works(db: sqlite3.Connection) -> None:
    depth = MAX_FILTER_DEPTH - 1
    assert select(db, "(" * depth + "pop = 10" + ")" * depth) == [1]


@pytest.mark.parametrize(
    "text",
    [
        "(" * (MAX_FILTER_DEPTH + 1) + "pop = 10" + ")" * (MAX_FILTER_DEPTH + 1),
        "pop = " + "(" * 3000 + "1" + ")" * 3000,
        "(" * 5000,
        "NOT (" * 1000 + "pop = 1" + ")" * 1000,
    ],
)
def test_deep_nesting_is_rejected(text: str) -> None:
    with pytest.raises(InvalidFilterError, match="nested too deeply"):
        compile_filter(text, FIELDS, dialect=SQLDialect.SQLITE)


def test_long_flat_chains_are_not_nesting(db: sqlite3.Connection) -> None:
    text = " OR ".join(f"pop = {n}" for n in range(600))
    assert len(text) < MAX_FILTER_LENGTH
    assert select(db, text) == [1, 2, 4, 5, 6]


def test_quoted_parentheses_do_not_count_as_nesting(db: sqlite3.Connection) -> None:
    assert select(db, "name = '" + "(" * (MAX_FILTER_DEPTH + 5) + "'") == []


def test_deep_arithmetic_is_rejected() -> None:
    text = "pop = " + " + ".join(["1"] * (MAX_FILTER_DEPTH + 5))
    with pytest.raises(InvalidFilterError, match="nested too deeply"):
        compile_filter(text, FIELDS, dialect=SQLDialect.SQLITE)


_TOKENS = [
    *"()'\"=<>!,.-+*/%_\\\n\t0123456789",
    *["'a%'", "'x'", "1.5", "-2", "<>", "<=", ">=", "'2020-01-01'", "'", '"'],
    *["name", "pop", "area", "AND", "OR", "NOT", "LIKE", "IN", "IS", "NULL", "BETWEEN"],
    *["CASEI", "DATE", "TIMESTAMP", "S_INTERSECTS", "POINT", "true", "\x00", "é", "名"],
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(
        st.text(max_size=80), st.lists(st.sampled_from(_TOKENS), max_size=30).map(" ".join)
    )
)
def test_random_text_compiles_or_raises_a_filter_error(text: str) -> None:
    for dialect in SQLDialect:
        try:
            compiled = compile_filter(text, FIELDS, dialect=dialect)
        except (InvalidFilterError, UnsupportedFilterError):
            continue
        placeholder = "?" if dialect is SQLDialect.SQLITE else "%s"
        assert compiled.sql.count(placeholder) == len(compiled.params)
        if dialect is SQLDialect.SQLITE:
            connection = make_table()
            try:
                connection.execute(f"SELECT id FROM t WHERE {compiled.sql}", compiled.params)
            finally:
                connection.close()


_OPERANDS = st.sampled_from(
    [
        "name",
        "pop",
        "area",
        "open",
        "built",
        '"odd name"',
        "CASEI(name)",
        "pop + 1",
        "area * -2.5",
        "'x y'",
        "'名'",
        "7",
        "0.5",
        "true",
        "DATE('2020-01-01')",
        "TIMESTAMP('2020-01-01T00:00:00Z')",
        "POINT(1 2)",
    ]
)
_OPERATORS = st.sampled_from(["=", "<>", "<", "<=", ">", ">=", "LIKE", "NOT LIKE"])


def _predicate(draw: st.DrawFn) -> str:
    left, right = draw(_OPERANDS), draw(_OPERANDS)
    kind = draw(st.sampled_from(["compare", "null", "between", "in"]))
    if kind == "null":
        return f"{left} IS {draw(st.sampled_from(['', 'NOT ']))}NULL"
    if kind == "between":
        return f"{left} BETWEEN {right} AND {draw(_OPERANDS)}"
    if kind == "in":
        return f"{left} IN ({right}, {draw(_OPERANDS)})"
    return f"{left} {draw(_OPERATORS)} {right}"


_PREDICATES = st.composite(_predicate)()
_CONDITIONS = st.recursive(
    _PREDICATES,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" AND ", " OR "]), inner).map("".join),
        inner.map(lambda condition: f"NOT ({condition})"),
        inner.map(lambda condition: f"({condition})"),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(text=_CONDITIONS)
def test_generated_filters_compile_and_run_or_raise_a_filter_error(text: str) -> None:
    try:
        compiled = compile_filter(text, FIELDS, dialect=SQLDialect.SQLITE)
    except (InvalidFilterError, UnsupportedFilterError):
        return
    connection = make_table()
    try:
        connection.execute(f"SELECT id FROM t WHERE {compiled.sql}", compiled.params).fetchall()
    finally:
        connection.close()
    postgres = compile_filter(text, FIELDS, dialect=SQLDialect.POSTGRES)
    assert postgres.sql.count("%s") == len(postgres.params)
