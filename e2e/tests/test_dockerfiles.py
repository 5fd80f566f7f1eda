"""The release Dockerfiles' build stage, as far as it can run without a Docker engine: the build
context `.dockerignore` lets through, the manifests the Dockerfile copies and the stub sources its
dependency layer writes must make a workspace cargo can load. (CI's own images are assembled
from host binaries, so nothing else would notice a Dockerfile that cannot build.)"""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ["engine/Dockerfile", "operator/Dockerfile"]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
        current = ""
    return lines


def let_through(path: str) -> bool:
    """Whether `.dockerignore` (later patterns win) keeps `path` in the build context."""
    keep = True
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if re.fullmatch(regex, path) or re.match(regex + "/", path):
            keep = negated
    return keep


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_dependency_layer_loads_the_whole_workspace(dockerfile, tmp_path):
    steps = instructions(ROOT / dockerfile)
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    build_stage = steps[stages[0] + 1 : stages[1]]
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    # Everything up to the first RUN: the manifests, copied as the Dockerfile copies them.
    first_run = next(i for i, (w, _) in enumerate(build_stage) if w == "RUN")
    for word, args in build_stage[:first_run]:
        if word != "COPY":
            continue
        *sources, dest = args.split()
        for source in sources:
            assert let_through(source), f"{dockerfile}: .dockerignore drops {source}"
            target = tmp_path / dest / Path(source).name if dest.endswith("/") else tmp_path / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / source, target)
    for member in members:
        assert (tmp_path / member / "Cargo.toml").exists(), f"{dockerfile} does not copy {member}/Cargo.toml"
    # The stub step, with cargo asked to load the workspace instead of building it.
    run = build_stage[first_run][1]
    run = re.sub(r"cargo build [^&]*", "cargo metadata --no-deps --format-version 1 --offline >/dev/null", run)
    done = subprocess.run(["bash", "-c", run], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, f"{dockerfile}: {done.stderr[-2000:]}"
