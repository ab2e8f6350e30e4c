#!/usr/bin/env python3
"""DuckDB over the same lake files as Strom's query bench, the same queries, timed.

    lake_duckdb.py LAKE_DIR [RUNS]
"""
import sys
import time

import duckdb

QUERIES = [
    "SELECT event, count(*) AS n FROM t WHERE date = '2026-11-22' GROUP BY event ORDER BY n DESC",
    "SELECT event, count(*) AS n FROM t GROUP BY event ORDER BY n DESC",
]


def main():
    lake, runs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5
    connection = duckdb.connect()
    connection.execute(f"SET threads = 2")
    source = f"read_parquet('{lake}/events/*/*/*.parquet', hive_partitioning = true, hive_types_autocast = false, union_by_name = true)"
    connection.execute(f"CREATE VIEW t AS SELECT * FROM {source}")
    for sql in QUERIES:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            rows = connection.execute(sql).fetchall()
            times.append((time.perf_counter() - started) * 1000)
        print(f"query                 {sql.replace(' t ', ' events ')}")
        print(f"  DuckDB {duckdb.__version__} ms  {' '.join(f'{t:.0f}' for t in times)}")
        print(f"  answer              {'; '.join(f'{e},{n}' for e, n in rows)}")


if __name__ == "__main__":
    main()
