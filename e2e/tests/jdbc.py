"""The Arrow Flight SQL JDBC driver (Maven Central, pinned by checksum, cached) and a Java to run
it with, for tests that go through JDBC."""

import hashlib
import os
import urllib.request
from pathlib import Path

JDBC_VERSION = "18.3.0"
JDBC_SHA256 = "3f418b46c880e263558c5de669bdbede2c5d4375527ced116fb29f795b03704c"


def driver_jar() -> Path:
    cache = Path(os.environ.get("SQE_CACHE", Path.home() / ".cache/sqe")) / "jdbc"
    jar = cache / f"flight-sql-jdbc-driver-{JDBC_VERSION}.jar"
    if not jar.exists():
        cache.mkdir(parents=True, exist_ok=True)
        url = (
            "https://repo1.maven.org/maven2/org/apache/arrow/flight-sql-jdbc-driver/"
            f"{JDBC_VERSION}/flight-sql-jdbc-driver-{JDBC_VERSION}.jar"
        )
        partial = jar.with_suffix(".part")
        urllib.request.urlretrieve(url, partial)
        partial.rename(jar)
    assert hashlib.sha256(jar.read_bytes()).hexdigest() == JDBC_SHA256, f"{jar}: checksum differs"
    return jar


def java() -> str:
    for home in [os.environ.get("SQE_JDBC_JAVA_HOME"), "/usr/lib/jvm/java-17-openjdk-amd64", os.environ.get("SQE_JAVA_HOME"),
                 "/usr/lib/jvm/temurin-25-jdk-amd64"]:
        if home and Path(home, "bin/java").exists():
            return str(Path(home, "bin/java"))
    return "java"
