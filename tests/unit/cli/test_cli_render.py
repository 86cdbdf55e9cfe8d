"""Tables like kubectl's, documents that parse back, durations people read."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import yaml
from rich.console import Console

from mycelium.cli.render import (
    column_widths,
    console_for,
    duration_text,
    json_text,
    print_fields,
    print_table,
    yaml_documents,
)


def rendered(write: Callable[[Console], object]) -> list[str]:
    out = io.StringIO()
    write(console_for(out))
    return [line.rstrip() for line in out.getvalue().splitlines()]


def test_tables_have_no_borders_and_three_spaces_between_columns() -> None:
    lines = rendered(
        lambda c: print_table(c, ["NAME", "PORTS"], [["reviews", "9080/HTTP"], ["a", "1"]])
    )

    assert lines == ["NAME      PORTS", "reviews   9080/HTTP", "a         1"]


def test_cells_are_text_not_markup_and_never_wrapped() -> None:
    long_labels = ",".join(f"label{i}=[value{i}]" for i in range(30))

    lines = rendered(lambda c: print_table(c, ["NAME", "LABELS"], [["x", long_labels]]))

    assert lines[1] == f"x      {long_labels}"


def test_rows_printed_later_stay_aligned_with_the_first_ones() -> None:
    headers = ["EVENT", "NAME", "REVISION"]
    first = [["MODIFIED", "reviews-long-name", "3"]]
    widths = column_widths(headers, first)

    def listing_then_event(console: Console) -> None:
        print_table(console, headers, first, min_widths=widths)
        print_table(console, headers, [["DELETED", "a", "4"]], min_widths=widths, show_header=False)

    lines = rendered(listing_then_event)

    assert [line.index("3") if "3" in line else line.index("4") for line in lines[1:]] == [
        lines[0].index("REVISION")
    ] * 2


def test_fields_align_their_values_across_blocks() -> None:
    def two_blocks(console: Console) -> None:
        print_fields(console, [("Name", "reviews"), ("Namespace", "default")])
        print_fields(console, [("Workloads", "<none>")])

    lines = rendered(two_blocks)

    assert {
        line.index(value)
        for line, value in zip(lines, ["reviews", "default", "<none>"], strict=True)
    } == {14}


def test_yaml_documents_are_separated_and_parse_back_in_order() -> None:
    docs = [{"kind": "Service", "metadata": {"name": n}} for n in ("a", "b")]

    text = yaml_documents(docs)

    assert "\n---\n" in text
    assert list(yaml.safe_load_all(text)) == docs
    assert text.index("kind") < text.index("metadata"), "keys keep the server's order"


def test_json_is_indented_and_parses_back() -> None:
    assert json.loads(json_text({"items": []})) == {"items": []}


def test_durations_show_the_two_largest_units() -> None:
    assert [duration_text(s) for s in (0, 59.9, 61, 3_700, 90_061)] == [
        "0s",
        "59s",
        "1m1s",
        "1h1m",
        "1d1h",
    ]
