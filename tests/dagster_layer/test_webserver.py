"""The real Dagster webserver serves this code location's asset graph over GraphQL."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from crystal_pipeline.service.postgres import free_port
from tests.conftest import REPO, cli_env

QUERY = "{ assetNodes { assetKey { path } groupName } }"


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


@pytest.mark.slow
def test_webserver_serves_the_asset_graph(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-m", "definitions", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=cli_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        nodes = None
        while time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.fail(f"webserver exited: {server.stderr.read()[-2000:]}")
            try:
                result = graphql(port, QUERY)
                nodes = result.get("data", {}).get("assetNodes")
                if nodes:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert nodes, "webserver did not answer with asset nodes within 120 s"
        groups = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}
        assert groups["raw_images"] == groups["annotations"] == groups["consensus_labels"] == "ingest"
        assert groups["image_tensors"] == groups["normalization_stats"] == "prepare"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
