"""A handle on the control plane of e2e/k8s (kubectl, helm) for the real-node suite.

e2e/k8s/node-test starts the plane and the real node and sets SQE_K8S_STATE; these tests run
only through it (the last e2e step ignores this folder)."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest


class Kube:
    def __init__(self, state: Path):
        env = {}
        for line in (state / "env").read_text().splitlines():
            if line.startswith("export "):
                key, _, value = line[len("export "):].partition("=")
                env[key] = value.strip("'\"")
        self.kubectl_bin = env["SQE_KUBECTL"]
        self.helm_bin = env["SQE_HELM"]
        self.env = {**os.environ, **env}

    def kubectl(self, *args, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        r = subprocess.run([self.kubectl_bin, *map(str, args)], input=input, capture_output=True,
                           text=True, env=self.env, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(map(str, args))} failed: {r.stderr.strip()}")
        return r.stdout

    def helm(self, *args, timeout: float = 300) -> str:
        r = subprocess.run([self.helm_bin, *map(str, args)], capture_output=True, text=True,
                           env=self.env, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError(f"helm {' '.join(map(str, args))} failed: {r.stderr.strip()}")
        return r.stdout

    def get(self, *args) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def apply(self, manifest: str, namespace: str) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)

    def wait_until(self, what: str, predicate, timeout: float = 180, interval: float = 1.0):
        """Polls `predicate()` until it returns something truthy; fails naming `what`."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
            except AssertionError as e:
                last = e
            if last and not isinstance(last, AssertionError):
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def kube() -> Kube:
    state = os.environ.get("SQE_K8S_STATE")
    if not state or not (Path(state) / "env").exists():
        pytest.exit("run this suite through e2e/k8s/node-test (the plane and the real node)", returncode=2)
    return Kube(Path(state))
