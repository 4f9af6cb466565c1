"""Put a table into BENCHMARKS.md between its markers, replacing what was there.

    python3 benches/put_table.py NAME TABLE_FILE   # between <!-- NAME:start/end -->

Used by load.sh, soak.sh and micro.sh with --write.
"""
import pathlib
import sys

name, table_file = sys.argv[1], sys.argv[2]
table = pathlib.Path(table_file).read_text()
doc_path = pathlib.Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
doc = doc_path.read_text()
start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
head, rest = doc.split(start, 1)
_, tail = rest.split(end, 1)
doc_path.write_text(f"{head}{start}\n{table}{end}{tail}")
print("BENCHMARKS.md updated", file=sys.stderr)
