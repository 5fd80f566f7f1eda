"""What the image tests share: running an image's bundle under runc as the pod would."""

import os
import shutil
import subprocess

import pytest

NONROOT = 65532
CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")

# Only a machine where runc cannot run at all skips: CI (.ci/run) installs these and runs as root.
needs_runc = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("runc", "umoci", "buildah")) or os.geteuid() != 0,
    reason="needs runc, umoci and buildah (apt-get install runc umoci buildah; .ci/run does) and "
    "root (runc has no user namespaces here to run rootless)",
)


def run_checked(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kw)
