"""Backport Nessie's upstream fix #12704 (commit c3c8f6f4b6, first released in 0.108.2) to 0.99.0.

Nessie 0.99.0 builds the session policy for *read-only* vended S3 credentials with
`format("arn:aws:s3:::%s%s/*", bucket, path)` -- no "/" between bucket and path -- so every
read-only credential is allowed `s3:GetObject` on a non-existent resource ("warehousedemo/...")
and cannot read the table it was vended for. Only 0.99.0 of nessie-quarkus is on Maven Central as
reachable here, so we apply the one-character upstream fix to the compiled class: the format
string is one CONSTANT_Utf8 entry of S3IamPolicies.class; we rewrite that entry (length-prefixed,
nothing else in a class file points into the constant pool by byte offset) and write the class
into a directory that `up` puts on the classpath *before* the unmodified runner jar.

usage: backport_readonly_arn_fix.py RUNNER_JAR OUT_DIR
"""

import os
import struct
import sys
import zipfile

CLASS = "org/projectnessie/catalog/files/s3/S3IamPolicies.class"
OLD = b"arn:aws:s3:::%s%s/*"
NEW = b"arn:aws:s3:::%s/%s/*"


def utf8_entry(s: bytes) -> bytes:
    return b"\x01" + struct.pack(">H", len(s)) + s


def main() -> None:
    jar, out_dir = sys.argv[1], sys.argv[2]
    with zipfile.ZipFile(jar) as z:
        data = z.read(CLASS)
    if data[:4] != b"\xca\xfe\xba\xbe":
        sys.exit(f"{CLASS} in {jar} is not a class file")
    old, new = utf8_entry(OLD), utf8_entry(NEW)
    # The correct string also exists already (the read-write statement); a second, identical
    # Utf8 constant is legal (JVMS 4.4: the pool does not require unique entries).
    if data.count(old) != 1:
        sys.exit(f"{CLASS}: expected exactly one buggy ARN format constant; is this Nessie 0.99.0?")
    patched = data.replace(old, new)
    dest = os.path.join(out_dir, CLASS)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest, "wb") as f:
        f.write(patched)


if __name__ == "__main__":
    main()
