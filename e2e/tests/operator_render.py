"""What `sqe-operator render` makes of a SqeCluster manifest, for the tests that run it: the
rendered config under the engine binary (operator/test_rendered_config.py) and the rendered pod
spec under the engine image (test_engine_image.py)."""

import os
import subprocess
from pathlib import Path

import pytest
# A dependency of pyiceberg (e2e/local/requirements.txt); parses the block-style YAML render
# prints, every scalar as a string.
import strictyaml

ROOT = Path(__file__).resolve().parents[2]
LOCAL_STACK_EXAMPLE = ROOT / "crds/examples/local-stack.yaml"


def binary(name: str) -> Path:
    """A workspace binary as built for the end-to-end suites ($SQE_BIN_DIR)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/sqe/cargo-target"))
    path = Path(os.environ.get("SQE_BIN_DIR", target / "debug")) / name
    if not path.exists():
        pytest.fail(f"{path} missing: run `cargo build --workspace --bins`")
    return path


def render(manifest: Path = LOCAL_STACK_EXAMPLE) -> str:
    return subprocess.run(
        [binary("sqe-operator"), "render", "-f", manifest], check=True, capture_output=True, text=True
    ).stdout


def documents(text: str) -> list[dict]:
    """The YAML documents of a multi-document stream (scalars stay strings: "65532", "true")."""
    docs = [d for d in ("\n" + text).split("\n---") if d.strip()]
    return [strictyaml.dirty_load(d, allow_flow_style=True).data for d in docs]


def one(docs: list[dict], kind: str) -> dict:
    (found,) = [d for d in docs if d.get("kind") == kind]
    return found


def configmap_engine_yaml(rendered: str) -> str:
    """The `engine.yaml` key of the rendered ConfigMap."""
    return one(documents(rendered), "ConfigMap")["data"]["engine.yaml"]
