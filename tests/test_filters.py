"""Metadata filters: the spec language, its SQL against a real store, and the CLI options."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semsearch.cli.filters import parse_cli_filter
from semsearch.errors import BadInputError
from semsearch.filters import compile_filter
from semsearch.records import Article
from semsearch.store import Store

ARTICLES = [
    Article(
        id="a1",
        text="One.",
        title="Alpha",
        url="https://x/1",
        date="2023-06-01",
        source="Reuters",
        author="Ann",
        tags=("NATO", "eu"),
        metadata={"region": "Europe", "views": 150, "year": 2023, "code": "2023", "live": True},
        path="f/a1.md",
    ),
    Article(
        id="a2",
        text="Two.",
        title="Bravo",
        date="2023-06-01T23:59:00+00:00",
        source="AP",
        author="Bob",
        tags=("nato",),
        metadata={"region": ["Asia", "Europe"], "views": 50, "live": False, "score": 2.5},
        path="f/a2.md",
    ),
    Article(
        id="a3",
        text="Three.",
        title="Charlie",
        date="2023-06-02T00:00:00+00:00",
        source="Reuters",
        tags=("economy",),
        metadata={"views": "100", "live": 1},
    ),
    Article(id="a4", text="Four."),
    Article(
        id="a5",
        text="Five.",
        date="2023-07-15",
        source="BBC",
        tags=("EU",),
        metadata={"region": "Africa", "views": 1000},
    ),
    Article(id="a6", text="Six.", date="2022-12-31T10:00:00", source="AP"),
    Article(id="a7", text="Seven.", date="last week", source="AP"),
]


def insert(store: Store, articles: list[Article], replace: Sequence[str] = ()) -> None:
    with store.transaction():
        store.delete_articles(replace)
        for article in articles:
            empty = np.zeros((0, 4), dtype=np.float32)
            store.insert_article(article, "hash", chunks=[], vectors=empty)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    # Read-only for every test, so built once.
    path = tmp_path_factory.mktemp("filters") / "s.sqlite"
    store = Store(path, create=True)
    insert(store, ARTICLES)
    store.close()
    connection = sqlite3.connect(path)
    yield connection
    connection.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Store, sqlite3.Connection]]:
    store = Store(tmp_path / "s.sqlite", create=True)
    connection = sqlite3.connect(tmp_path / "s.sqlite")
    yield store, connection
    connection.close()
    store.close()


def matching(db: sqlite3.Connection, spec: dict[str, Any]) -> list[str]:
    f = compile_filter(spec)
    assert f is not None
    rows = db.execute(f"SELECT a.id FROM articles a WHERE {f.sql} ORDER BY a.id", f.params)
    return [row[0] for row in rows]


def test_no_spec_compiles_to_none():
    assert compile_filter(None) is None
    assert compile_filter({}) is None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"source": "Reuters"}, ["a1", "a3"]),
        ({"source": {"eq": "AP"}}, ["a2", "a6", "a7"]),
        ({"source": {"ne": "AP"}}, ["a1", "a3", "a4", "a5"]),
        ({"source": ["AP", "BBC"]}, ["a2", "a5", "a6", "a7"]),
        ({"source": {"nin": ["AP", "BBC"]}}, ["a1", "a3", "a4"]),
        ({"author": {"gt": "Ann"}}, ["a2"]),
        ({"author": {"gte": "Ann"}}, ["a1", "a2"]),
        ({"title": {"lt": "Bravo"}}, ["a1"]),
        ({"title": {"lte": "Bravo"}}, ["a1", "a2"]),
        ({"id": {"in": ["a1", "a9"]}}, ["a1"]),
        ({"url": "https://x/1"}, ["a1"]),
        ({"path": {"gte": "f/a2"}}, ["a2"]),
    ],
)
def test_standard_field_operators(db, spec, expected):
    assert matching(db, spec) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"date": {"gte": "2023-06-01"}}, ["a1", "a2", "a3", "a5"]),
        ({"date": {"lte": "2023-06-01"}}, ["a1", "a2", "a6"]),  # inclusive of 23:59 that day
        ({"date": {"lt": "2023-06-01"}}, ["a6"]),
        ({"date": {"gt": "2023-06-01"}}, ["a3", "a5"]),
        ({"date": "2023-06-01"}, ["a1", "a2"]),
        ({"date": "2023-06"}, ["a1", "a2", "a3"]),
        ({"date": {"eq": "2022"}}, ["a6"]),
        ({"date": {"ne": "2023-06"}}, ["a5", "a6"]),
        ({"date": ["2022", "2023-07"]}, ["a5", "a6"]),
        ({"date": {"nin": ["2022", "2023-07"]}}, ["a1", "a2", "a3"]),
        ({"date": {"gte": "2023-06-01", "lt": "2023-07"}}, ["a1", "a2", "a3"]),
        ({"date": {"gte": "2023-06-01T12:00", "lte": "2023-06-02T00:00"}}, ["a2", "a3"]),
        ({"date": {"gt": "2023-06-01 23:59Z"}}, ["a3", "a5"]),
        ({"date": {"gte": dt.date(2023, 7, 1)}}, ["a5"]),
        ({"date": {"lte": "9999-12-31"}}, ["a1", "a2", "a3", "a5", "a6"]),
        ({"date": {"gt": "9999"}}, []),
    ],
)
def test_date_conditions(db, spec, expected):
    # a4 has no date and a7 an unparseable one: neither ever matches.
    assert matching(db, spec) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"tags": "nato"}, ["a1", "a2"]),
        ({"tags": {"eq": "Nato"}}, ["a1", "a2"]),
        ({"tags": {"in": ["EU", "economy"]}}, ["a1", "a3", "a5"]),
        ({"tags": {"ne": "NATO"}}, ["a3", "a4", "a5", "a6", "a7"]),
        ({"tags": {"nin": ["nato", "eu"]}}, ["a3", "a4", "a6", "a7"]),
    ],
)
def test_tags_membership_ignores_case(db, spec, expected):
    assert matching(db, spec) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"region": "Europe"}, ["a1", "a2"]),  # a scalar, or an element of an array
        ({"region": ["Asia", "Africa"]}, ["a2", "a5"]),
        ({"region": {"ne": "Europe"}}, ["a3", "a4", "a5", "a6", "a7"]),
        ({"region": {"nin": ["Europe", "Africa"]}}, ["a3", "a4", "a6", "a7"]),
        ({"views": {"gte": 100}}, ["a1", "a5"]),  # a3's "100" is a string
        ({"views": {"lt": 100}}, ["a2"]),
        ({"views": {"gte": "1"}}, ["a3"]),
        ({"views": 150}, ["a1"]),
        ({"score": {"gt": 2}}, ["a2"]),
        ({"year": 2023}, ["a1"]),
        ({"year": "2023"}, []),
        ({"code": "2023"}, ["a1"]),
        ({"code": 2023}, []),
        ({"Region": "Europe"}, []),  # keys are case-sensitive
    ],
)
def test_metadata_scalars_arrays_and_ranges(db, spec, expected):
    assert matching(db, spec) == expected


def test_metadata_booleans_are_not_numbers(db):
    assert matching(db, {"live": True}) == ["a1"]
    assert matching(db, {"live": False}) == ["a2"]
    assert matching(db, {"live": 1}) == ["a3"]
    assert matching(db, {"live": {"ne": True}}) == ["a2", "a3", "a4", "a5", "a6", "a7"]


def test_fields_are_anded(db):
    spec = {"source": "Reuters", "date": {"lte": "2023-06-01"}, "tags": "nato"}
    assert matching(db, spec) == ["a1"]
    assert matching(db, {"source": "AP", "views": {"lt": 100}}) == ["a2"]


@pytest.mark.parametrize("text", ["x'); DROP TABLE articles; --", 'x" OR 1=1 --'])
def test_hostile_text_is_only_ever_a_value(db, text):
    for spec in ({"source": text}, {"tags": [text]}, {"date": {"ne": "2023"}, "region": text}):
        f = compile_filter(spec)
        assert f is not None and text not in f.sql
        assert matching(db, spec) == []
    assert matching(db, {"x'); DROP TABLE articles; --": 1}) == []
    assert db.execute("SELECT count(*) FROM articles").fetchone()[0] == len(ARTICLES)


def test_spec_is_normalised_and_json_serialisable():
    spec = {"source": "AP", "tags": ["nato"], "views": {"gte": 1}, "date": dt.date(2023, 6, 1)}
    f = compile_filter(spec)
    assert f is not None
    assert f.spec == {
        "source": {"eq": "AP"},
        "tags": {"in": ["nato"]},
        "views": {"gte": 1},
        "date": {"eq": "2023-06-01"},
    }
    assert json.loads(json.dumps(f.spec)) == f.spec
    assert compile_filter(f.spec) == f


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ({"source": {"like": "x"}}, ["'like'", "'source'", "eq, ne, gt, gte, lt, lte, in, nin"]),
        ({"date": "2023-13-01"}, ["'2023-13-01'", "YYYY-MM-DD"]),
        ({"date": {"gte": "yesterday"}}, ["'yesterday'", "ISO 8601"]),
        ({'a"b': 1}, ["'a\"b'", "double quotes"]),
        ({"a\nb": 1}, ["control characters"]),
        ({"": 1}, ["cannot be empty"]),
        ({"source": {"in": []}}, ["'source'", "non-empty list"]),
        ({"region": []}, ["'region'", "non-empty list"]),
        ({"source": None}, ["'source'", "None"]),
        ({"region": {"eq": {"x": 1}}}, ["'region'", "{'x': 1}"]),
        ({"views": float("nan")}, ["'views'", "nan"]),
        ({"source": True}, ["'source'", "a string"]),
        ({"tags": {"gt": "a"}}, ["'tags'", "'gt'"]),
        ({"views": {"gt": True}}, ["'views'", "numbers or strings"]),
        ({"source": {}}, ["'source'", "no operators"]),
    ],
)
def test_bad_specs_raise_with_a_clear_message(spec, fragments):
    with pytest.raises(BadInputError) as e:
        compile_filter(spec)
    for fragment in fragments:
        assert fragment in str(e.value)


def test_a_spec_must_be_a_mapping():
    with pytest.raises(BadInputError, match="JSON object"):
        compile_filter(["source"])  # type: ignore[arg-type]


# Property: the SQL agrees with a Python reference evaluation

MISSING = object()
SCALARS = st.integers(-3, 3) | st.text("aB1", max_size=2) | st.booleans()
STORED = st.just(MISSING) | SCALARS | st.lists(st.integers(-3, 3) | st.text("aB1", max_size=2))
RANGE_OPERAND = st.integers(-3, 3) | st.text("aB1", max_size=2)
CONDITIONS = (
    st.tuples(st.sampled_from(["eq", "ne"]), SCALARS)
    | st.tuples(st.sampled_from(["in", "nin"]), st.lists(SCALARS, min_size=1, max_size=3))
    | st.tuples(st.sampled_from(["gt", "gte", "lt", "lte"]), RANGE_OPERAND)
)


def kind(value: Any) -> str:
    return "bool" if isinstance(value, bool) else "str" if isinstance(value, str) else "num"


def reference(stored: Any, op: str, operand: Any) -> bool:
    elements = [] if stored is MISSING else stored if isinstance(stored, list) else [stored]
    if op in ("eq", "ne", "in", "nin"):
        wanted = operand if op in ("in", "nin") else [operand]
        hit = any(kind(e) == kind(w) and e == w for e in elements for w in wanted)
        return hit if op in ("eq", "in") else not hit
    if stored is MISSING or isinstance(stored, list) or kind(stored) != kind(operand):
        return False
    compare = {"gt": stored > operand, "gte": stored >= operand, "lt": stored < operand}
    return compare.get(op, stored <= operand)


def test_metadata_condition_matches_python_reference(store):
    store, db = store

    @settings(max_examples=60, deadline=None)
    @given(values=st.lists(STORED, max_size=6), condition=CONDITIONS)
    def check(values: list[Any], condition: tuple[str, Any]) -> None:
        articles = [
            Article(id=f"p{i}", text="t", metadata={} if v is MISSING else {"k": v})
            for i, v in enumerate(values)
        ]
        insert(store, articles, replace=[f"p{i}" for i in range(6)])
        op, operand = condition
        pairs = zip(articles, values, strict=True)
        expected = [a.id for a, v in pairs if reference(v, op, operand)]
        assert matching(db, {"k": {op: operand}}) == expected

    check()


DAYS = st.dates(dt.date(2022, 12, 30), dt.date(2023, 1, 2))
STORED_DATES = st.tuples(DAYS, st.none() | st.times(), st.sampled_from(["", "Z", "+02:00"]))
DAY_OPERATORS = {"eq": "__eq__", "ne": "__ne__", "gt": "__gt__", "gte": "__ge__", "lt": "__lt__"}


def test_date_condition_compares_whole_days(store):
    store, db = store

    @settings(max_examples=50, deadline=None)
    @given(
        stored=st.lists(STORED_DATES, max_size=8),
        op=st.sampled_from([*DAY_OPERATORS, "lte"]),
        day=DAYS,
    )
    def check(stored: list[tuple[dt.date, dt.time | None, str]], op: str, day: dt.date) -> None:
        texts = [
            d.isoformat() if t is None else f"{d.isoformat()}T{t.isoformat()}{zone}"
            for d, t, zone in stored
        ]
        articles = [Article(id=f"d{i}", text="t", date=x) for i, x in enumerate(texts)]
        insert(store, articles, replace=[f"d{i}" for i in range(8)])
        method = DAY_OPERATORS.get(op, "__le__")
        expected = [f"d{i}" for i, (d, _, _) in enumerate(stored) if getattr(d, method)(day)]
        assert matching(db, {"date": {op: day.isoformat()}}) == expected

    check()


# The CLI options


@pytest.mark.parametrize(
    ("expr", "spec"),
    [
        ("source=Reuters", {"source": {"eq": "Reuters"}}),
        (" source = Reuters ", {"source": {"eq": "Reuters"}}),
        ("source!=AP", {"source": {"ne": "AP"}}),
        ("views>=100", {"views": {"gte": 100}}),
        ("views<=100", {"views": {"lte": 100}}),
        ("score>1.5", {"score": {"gt": 1.5}}),
        ("views<0", {"views": {"lt": 0}}),
        ("title=a=b", {"title": {"eq": "a=b"}}),
        ("note=>x", {"note": {"eq": ">x"}}),
        ("year=2023", {"year": {"eq": 2023}}),
        ('code="2023"', {"code": {"eq": "2023"}}),
        ("live=true", {"live": {"eq": True}}),
        ("x=null", {"x": {"eq": "null"}}),
        ("x=NaN", {"x": {"eq": "NaN"}}),
        ("id=123", {"id": {"eq": "123"}}),  # standard fields are text
        ("date>=2023", {"date": {"gte": "2023"}}),
        ("region=", {"region": {"eq": ""}}),
    ],
)
def test_where_forms(expr, spec):
    assert parse_cli_filter([expr]) == spec


def test_repeated_where_means_any_or_none_of_the_values():
    assert parse_cli_filter(["source=AP", "source=BBC"]) == {"source": {"in": ["AP", "BBC"]}}
    assert parse_cli_filter(["views!=1", "views!=2"]) == {"views": {"nin": [1, 2]}}
    both = parse_cli_filter(["views>=1", "views<9"])
    assert both == {"views": {"gte": 1, "lt": 9}}


def test_since_until_and_tags():
    spec = parse_cli_filter(since="2023-06-01", until="2023-06-30", tags=["nato", "eu"])
    assert spec == {
        "date": {"gte": "2023-06-01", "lte": "2023-06-30"},
        "tags": {"in": ["nato", "eu"]},
    }


@pytest.mark.parametrize(("prefix", "option"), [("--", "--until"), ("", "until")])
def test_a_bad_since_or_until_names_the_option(prefix, option):
    with pytest.raises(BadInputError, match=rf"^{option}: 'yesterday' is not an ISO 8601 date"):
        parse_cli_filter(since="2023-01-01", until="yesterday", prefix=prefix)


def test_nothing_given_is_none():
    assert parse_cli_filter() is None


def test_json_filter_merges_with_the_other_options():
    spec = parse_cli_filter(
        ["views>=100"], since="2023-01-01", json_filter='{"views": {"lt": 500}, "region": "EU"}'
    )
    assert spec == {
        "views": {"gte": 100, "lt": 500},
        "date": {"gte": "2023-01-01"},
        "region": {"eq": "EU"},
    }
    assert parse_cli_filter(json_filter='{"date": {"gte": "2023"}}', since="2023") is not None


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"where": ["novalue"]}, ["'novalue'", "key=value, key!=value"]),
        ({"where": ["=x"]}, ["'=x'", "key<value"]),
        ({"json_filter": "{bad"}, ["--filter", "not valid JSON"]),
        ({"json_filter": "[1]"}, ["--filter", "JSON object"]),
        ({"since": "2023-01-01", "json_filter": '{"date": {"gte": "2023-02-01"}}'}, ["'gte'"]),
        ({"where": ["x>=1", "x>=2"]}, ["'x'", "twice with different values"]),
        ({"until": "June"}, ["'June'", "YYYY-MM-DD"]),
        ({"json_filter": '{"views": {"between": [1, 2]}}'}, ["'between'"]),
    ],
)
def test_cli_filter_errors(kwargs, fragments):
    with pytest.raises(BadInputError) as e:
        parse_cli_filter(**kwargs)
    for fragment in fragments:
        assert fragment in str(e.value)
