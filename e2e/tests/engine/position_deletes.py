"""Merge-on-read row deletes committed through the catalog, for tests that need delete files.

No writer on this machine makes delete files that iceberg-rust can read: pyiceberg 0.12 deletes
copy-on-write only, iceberg-rust 0.10 writes no deletes, and DuckDB 1.4.4 (which deletes
merge-on-read) writes the manifest-entry schema under each manifest's `schema` key, which
iceberg-rust 0.10.1 refuses to parse. So this writes what Iceberg's Java `RowDelta` commits,
with pyiceberg's own file IO, manifest writer and snapshot producer: a Parquet position-delete
file (`file_path`, `pos`, with the spec's reserved field ids) listed in a manifest whose content
is `deletes`, in a new snapshot on top of the table's current manifests.
"""

import uuid

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat, ManifestContent, ManifestWriterV2
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import _FastAppendFiles
from pyiceberg.typedef import Record

# Iceberg spec, "Position Delete Files": reserved field ids.
FILE_PATH_ID = 2147483546
POS_ID = 2147483545


class _DeleteManifestWriter(ManifestWriterV2):
    def content(self) -> ManifestContent:
        return ManifestContent.DELETES

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "deletes"}


class _AddDeleteFiles(_FastAppendFiles):
    """A fast append whose new manifest lists delete files (content=deletes)."""

    def new_manifest_writer(self, spec):
        return _DeleteManifestWriter(
            spec=spec,
            schema=self.schema(),
            output_file=self.new_manifest_output(),
            snapshot_id=self._snapshot_id,
            avro_compression=self._compression,
        )


def delete_positions(table, data_file_path: str, positions: list[int]):
    """Marks rows `positions` (0-based, within `data_file_path`) of an unpartitioned v2 table as
    deleted; returns the table as committed."""
    positions = sorted(positions)
    schema = pa.schema([
        pa.field("file_path", pa.string(), nullable=False, metadata={"PARQUET:field_id": str(FILE_PATH_ID)}),
        pa.field("pos", pa.int64(), nullable=False, metadata={"PARQUET:field_id": str(POS_ID)}),
    ])
    rows = pa.table({"file_path": [data_file_path] * len(positions), "pos": positions}, schema=schema)
    location = f"{table.location()}/data/deletes-{uuid.uuid4().hex}.parquet"
    with table.io.new_output(location).create() as out:
        pq.write_table(rows, out)
    size = len(table.io.new_input(location).open().read())
    delete_file = DataFile.from_args(
        content=DataFileContent.POSITION_DELETES,
        file_path=location,
        file_format=FileFormat.PARQUET,
        partition=Record(),
        record_count=len(positions),
        file_size_in_bytes=size,
    )
    delete_file.spec_id = table.spec().spec_id
    with table.transaction() as tx:
        producer = _AddDeleteFiles(operation=Operation.OVERWRITE, transaction=tx, io=table.io)
        producer.append_data_file(delete_file)
        producer.commit()
    return table.refresh()
