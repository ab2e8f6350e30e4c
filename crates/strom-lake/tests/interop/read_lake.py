#!/usr/bin/env python3
"""Reads a Strom lake table with DuckDB and with pyarrow, independently of Strom.

    read_lake.py LAKE_ROOT TABLE

Prints one JSON object: for each reader, the column types as the reader names them and the
rows sorted by (log_partition, log_offset). Timestamps become microseconds since the epoch
(UTC), so that the Rust side compares numbers, not formatting.
"""
import datetime
import json
import sys

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def plain(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        delta = value - EPOCH
        return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": list(value)}
    return value


def with_duckdb(root, table):
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    source = f"read_parquet('{root}/{table}/*/*/*.parquet', hive_partitioning = true, union_by_name = true)"
    described = connection.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    types = {row[0]: row[1] for row in described}
    cursor = connection.execute(f"SELECT * FROM {source} ORDER BY log_partition, log_offset")
    names = [d[0] for d in cursor.description]
    rows = [{n: plain(v) for n, v in zip(names, row)} for row in cursor.fetchall()]
    return {"types": types, "rows": rows}


def with_pyarrow(root, table):
    partitioning = ds.partitioning(pa.schema([("date", pa.string()), ("hour", pa.string())]), flavor="hive")
    files = ds.dataset(f"{root}/{table}", format="parquet", partitioning=partitioning).files
    # Files of different catalog versions have different columns: the table's schema is
    # their union, as a reader of an evolving table makes it.
    unified = pa.unify_schemas([pq.read_schema(f) for f in files] + [partitioning.schema])
    dataset = ds.dataset(f"{root}/{table}", format="parquet", partitioning=partitioning, schema=unified)
    data = dataset.to_table().sort_by([("log_partition", "ascending"), ("log_offset", "ascending")])
    types = {field.name: str(field.type) for field in data.schema}
    rows = [{k: plain(v) for k, v in row.items()} for row in data.to_pylist()]
    return {"types": types, "rows": rows}


def main():
    root, table = sys.argv[1], sys.argv[2]
    print(json.dumps({"duckdb": with_duckdb(root, table), "pyarrow": with_pyarrow(root, table),
                      "versions": {"duckdb": duckdb.__version__, "pyarrow": pa.__version__}}))


if __name__ == "__main__":
    main()
