"""TPC-H data for the benchmark: generated once per scale factor, loaded into the local catalog.

    eval "$(e2e/local/env)"; $SQE_CACHE/bench-venv/bin/python e2e/bench/data.py --sf 0.01 [--sf 1]
    ... data.py --sf 0.01 --drop        # drop the namespace (and its data files) again

1. Generate: `tpchgen-cli parquet` (PyPI wheel) writes the 8 tables, one Parquet file each
   (Snappy, ~7 MiB row groups, no Parquet field ids), into $SQE_CACHE/tpch/sf<N>/. Skipped when
   the directory is complete (marker file `.complete`, written last).
2. Load: as the catalog admin (sqe-admin, as e2e/local/seed.py), namespace `tpch_sf<N>` (dots as
   underscores: tpch_sf0_01, tpch_sf0_1, tpch_sf1; the engine's namespaces are one level, so each
   scale factor gets its own). Each table is created with the file's schema, the very same file is
   copied under the table's location (`<location>/data/<table>.parquet`, written with the
   credentials the catalog vends for that table) and committed with pyiceberg's `add_files` (which
   records the name mapping, since the files carry no field ids). So the Parquet files in MinIO
   are byte for byte the local ones. A table whose current snapshot already holds the expected
   row count is left alone.
3. Write $SQE_CACHE/tpch/sf<N>/lake.json: per table its Iceberg location, its data files
   (s3:// paths, from the current snapshot's manifests via pyiceberg), the local file, the row
   count. sqe-bench and tpch.py read it.

The scale factor's namespace is readable by alice and by the machine client sqe-etl (Nessie rule
`bench_read_tpch` in e2e/local/nessie/application.properties).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "local"))
import seed  # noqa: E402  (user_token, catalog: the local stack's own helpers)

TABLES = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"]


def cache_root() -> Path:
    return Path(os.environ.get("SQE_CACHE") or Path.home() / ".cache" / "sqe") / "tpch"


def sf_tag(sf: str) -> str:
    """'0.01' -> '0_01', '1' -> '1' (also the namespace suffix and the cache directory)."""
    v = float(sf)
    text = f"{v:g}" if v != int(v) else str(int(v))
    return text.replace(".", "_")


def sf_dir(sf: str) -> Path:
    return cache_root() / f"sf{sf_tag(sf)}"


def namespace(sf: str) -> str:
    return f"tpch_sf{sf_tag(sf)}"


def log(msg: str) -> None:
    print(f"[tpch-data] {msg}", file=sys.stderr, flush=True)


def tpchgen() -> str:
    exe = Path(sys.executable).parent / "tpchgen-cli"
    if exe.exists():
        return str(exe)
    found = shutil.which("tpchgen-cli")
    if not found:
        sys.exit("tpchgen-cli not found: install e2e/bench/requirements.txt (e2e/bench/venv)")
    return found


def generate(sf: str) -> Path:
    out = sf_dir(sf)
    if (out / ".complete").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.monotonic()
    subprocess.run(
        [tpchgen(), "parquet", "-s", sf, "-o", str(tmp), "--field-ids", "false", "--quiet"],
        check=True,
    )
    for t in TABLES:
        if not (tmp / f"{t}.parquet").exists():
            sys.exit(f"tpchgen-cli wrote no {t}.parquet into {tmp}")
    (tmp / ".complete").write_text(f"tpchgen-cli parquet -s {sf} --field-ids false\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log(f"generated SF {sf} in {time.monotonic() - t0:.1f}s into {out}")
    return out


def table_schema(path: Path) -> pa.Schema:
    """The file's schema with string_view (how tpchgen's Arrow schema names strings) as string:
    Iceberg has one string type, and the Parquet column is the same UTF8 byte array either way."""
    fields = []
    for f in pq.read_schema(path):
        t = pa.string() if f.type in (pa.string_view(), pa.large_string()) else f.type
        fields.append(pa.field(f.name, t, nullable=f.nullable))
    return pa.schema(fields)


def rows_of(table) -> int | None:
    snap = table.current_snapshot()
    if snap is None or snap.summary is None:
        return None
    v = snap.summary.additional_properties.get("total-records")
    return int(v) if v is not None else None


def data_files(table) -> list[str]:
    return sorted(task.file.file_path for task in table.scan().plan_files())


def load(sf: str, gen: Path, cat) -> dict:
    from pyiceberg.exceptions import NoSuchTableError

    ns = namespace(sf)
    cat.create_namespace_if_not_exists(ns)
    out = {"scale_factor": sf, "namespace": ns, "tables": {}}
    for name in TABLES:
        local = gen / f"{name}.parquet"
        want = pq.ParquetFile(local).metadata.num_rows
        ident = f"{ns}.{name}"
        try:
            table = cat.load_table(ident)
        except NoSuchTableError:
            table = None
        if table is not None and rows_of(table) != want:
            log(f"{ident}: holds {rows_of(table)} rows, not {want}: dropping and reloading")
            drop_table(cat, ident)
            table = None
        if table is None:
            t0 = time.monotonic()
            table = cat.create_table(ident, schema=table_schema(local))
            dest = f"{table.location().rstrip('/')}/data/{name}.parquet"
            with open(local, "rb") as src, table.io.new_output(dest).create(overwrite=True) as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
            table.add_files([dest])
            table = cat.load_table(ident)
            log(f"loaded {ident}: {want} rows, {local.stat().st_size} bytes "
                f"in {time.monotonic() - t0:.1f}s")
        files = data_files(table)
        out["tables"][name] = {
            "identifier": ident,
            "location": table.location(),
            "data_files": files,
            "local_file": str(local),
            "rows": want,
            "bytes": local.stat().st_size,
        }
    return out


def drop_table(cat, ident: str) -> None:
    """Drops the table and deletes its data files (Nessie's drop keeps them)."""
    table = cat.load_table(ident)
    files = data_files(table) if table.current_snapshot() is not None else []
    cat.drop_table(ident)
    for f in files:
        try:
            table.io.delete(f)
        except Exception as e:  # noqa: BLE001 — a leftover file is reported, not fatal
            log(f"could not delete {f}: {e}")


def drop(sf: str, cat) -> None:
    from pyiceberg.exceptions import NoSuchNamespaceError

    ns = namespace(sf)
    try:
        if not cat.namespace_exists(ns):
            raise NoSuchNamespaceError(ns)
        for ident in cat.list_tables(ns):
            drop_table(cat, ".".join(ident))
        cat.drop_namespace(ns)
    except NoSuchNamespaceError:
        log(f"{ns}: not there")
        return
    (sf_dir(sf) / "lake.json").unlink(missing_ok=True)
    log(f"dropped {ns}")


def admin_catalog():
    e = os.environ
    if "SQE_CATALOG_URI" not in e:
        sys.exit('the local stack\'s environment is missing: eval "$(e2e/local/env)" first')
    return seed.catalog(seed.user_token(e["SQE_CATALOG_ADMIN"], e["SQE_CATALOG_ADMIN_PASSWORD"]))


def ensure(sf: str, *, with_catalog: bool = True) -> dict:
    """Generates (if missing) and loads (if missing) one scale factor; returns lake.json's dict."""
    gen = generate(sf)
    if not with_catalog:
        return {"scale_factor": sf, "namespace": namespace(sf), "tables": {
            t: {"local_file": str(gen / f"{t}.parquet"),
                "rows": pq.ParquetFile(gen / f"{t}.parquet").metadata.num_rows}
            for t in TABLES}}
    lake = load(sf, gen, admin_catalog())
    (gen / "lake.json").write_text(json.dumps(lake, indent=2) + "\n")
    return lake


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sf", action="append", required=True, help="scale factor (repeatable)")
    ap.add_argument("--drop", action="store_true", help="drop the namespace and its files instead")
    ap.add_argument("--local-only", action="store_true", help="generate only; no catalog")
    args = ap.parse_args()
    for sf in args.sf:
        if args.drop:
            drop(sf, admin_catalog())
            continue
        lake = ensure(sf, with_catalog=not args.local_only)
        print(json.dumps({"scale_factor": sf, "namespace": lake["namespace"],
                          "dir": str(sf_dir(sf)),
                          "rows": {t: v["rows"] for t, v in lake["tables"].items()}}))


if __name__ == "__main__":
    main()
