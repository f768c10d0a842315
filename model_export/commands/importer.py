"""``shopcast import``: turn a CSV, TSV or Parquet interaction table into an event log."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shopcast import``."""
    parser.add_argument("input", help="the table: .csv, .tsv or .parquet (see --format)")
    parser.add_argument("--out", required=True,
                        help="event log to write (JSON Lines; gzip when it ends in .gz)")
    parser.add_argument("--user-col", required=True, help="column with the user id")
    parser.add_argument("--item-col", required=True, help="column with the item id")
    parser.add_argument("--time-col", required=True, help="column with the event time")
    parser.add_argument("--type-col", default=None,
                        help="column with the event type (without it every row is "
                             "--default-type)")
    parser.add_argument("--query-col", default=None, help="column with search text")
    parser.add_argument("--category-col", default=None, help="column with the item's category")
    parser.add_argument("--price-col", default=None, help="column with the price")
    parser.add_argument("--time-unit", default="auto",
                        choices=("auto", "s", "ms", "us", "ns", "iso"),
                        help="unit of numeric times, or iso for ISO 8601 text (default: auto, "
                             "from the values)")
    parser.add_argument("--type-map", default=None,
                        help="rename event types, e.g. view=browse,cart=add_to_cart,buy=purchase"
                             " (names already in the contract need no entry)")
    parser.add_argument("--default-type", default="click",
                        help="type of every row when there is no --type-col (default: click)")
    parser.add_argument("--format", default=None, choices=("csv", "tsv", "parquet"),
                        help="input format when the file name does not tell")
    parser.add_argument("--rejects", default=None,
                        help="write rows that break the event contract here (JSON Lines, with "
                             "the reason)")
    parser.add_argument("--id-prefix", default="imp",
                        help="event ids are PREFIX-ROW, ROW counting data rows from 1")


def run(args: argparse.Namespace) -> int:
    """Import, write the log (and rejects) and print the summary."""
    from model_export.importer import Columns, TableError, import_table, parse_type_map

    columns = Columns(user=args.user_col, item=args.item_col, time=args.time_col,
                      type=args.type_col, query=args.query_col, category=args.category_col,
                      price=args.price_col)
    try:
        report = import_table(args.input, args.out, columns, fmt=args.format,
                              time_unit=args.time_unit, type_map=parse_type_map(args.type_map),
                              default_type=args.default_type, id_prefix=args.id_prefix,
                              rejects=args.rejects)
    except TableError as exc:
        print(f"shopcast import: {exc}", file=sys.stderr)
        return 2
    print(f"shopcast import: {args.input} -> {args.out}")
    print(report.summary())
    if args.rejects and sum(report.rejected.values()):
        print(f"rejected rows written to {args.rejects}")
    if report.rows and not report.events:
        print("shopcast import: every row was rejected; check the column flags and "
              "--time-unit", file=sys.stderr)
        return 1
    return 0
