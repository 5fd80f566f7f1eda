"""Apply the local stack's Nessie backport to the jar of a Nessie image that holds the class.

usage: patch_nessie_jar.py LIB_DIR OUT_LIB_DIR

Finds the one jar under LIB_DIR containing S3IamPolicies.class, runs
e2e/local/nessie/backport_readonly_arn_fix.py on it (unchanged: it writes the patched class into a
directory), and writes a copy of that jar with the class replaced to the same relative path under
OUT_LIB_DIR. Exits non-zero unless exactly one jar holds the class.
"""

import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

HERE = pathlib.Path(__file__).resolve().parent
CLASS = "org/projectnessie/catalog/files/s3/S3IamPolicies.class"


def main() -> None:
    lib, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    jars = []
    for jar in sorted(lib.rglob("*.jar")):
        with zipfile.ZipFile(jar) as z:
            if CLASS in z.namelist():
                jars.append(jar)
    if len(jars) != 1:
        sys.exit(f"expected one jar with {CLASS} under {lib}, found {[str(j) for j in jars]}")
    jar = jars[0]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, str(HERE / "backport_readonly_arn_fix.py"), str(jar), tmp], check=True
        )
        patched = (pathlib.Path(tmp) / CLASS).read_bytes()
    dest = out / jar.relative_to(lib)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Rewrite entry by entry (zipfile cannot replace in place), keeping order and metadata.
    with zipfile.ZipFile(jar) as src, zipfile.ZipFile(dest, "w") as dst:
        for info in src.infolist():
            data = patched if info.filename == CLASS else src.read(info.filename)
            dst.writestr(info, data, compress_type=info.compress_type)
    os.chmod(dest, 0o644)
    print(f"patched {CLASS} in {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
