"""The deployment files and the docs index keep their promises (issue 8 items 6 and 7).

Invariants checked without a Docker engine (CI also runs `docker compose config`, with the
plugin from scripts/ensure_compose.sh): docker-compose.yml parses and has postgres, redis, a
one-shot migrate that every asm process waits for, web on uvicorn, a scalable worker (no
container_name, no host ports) and beat, with health checks; the Dockerfile runs as a
non-root user on a slim base; docs/README.md links every page in docs/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_compose_has_every_service_with_health_checks():
    services = _compose()["services"]
    assert set(services) >= {"postgres", "redis", "migrate", "web", "worker", "beat"}
    for name in ("postgres", "redis", "web", "worker"):
        assert "healthcheck" in services[name], name
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_processes():
    services = _compose()["services"]
    assert services["web"]["command"][:2] == ["uvicorn", "asm_project.asgi:application"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "asm_project", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "asm_project", "beat"]
    worker = services["worker"]
    assert "container_name" not in worker  # `--scale worker=4` needs distinct names
    assert "ports" not in worker  # and no fixed host port
    assert set(_compose()["volumes"]) >= {"pgdata"}
    assert any("pgdata" in v for v in services["postgres"]["volumes"])


def test_dockerfile_is_slim_and_non_root():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.\d+-slim\s*$", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users
    assert users[-1] not in {"root", "0"}


def test_docs_index_links_every_page():
    docs = ROOT / "docs"
    index = (docs / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([\w.-]+\.md)\)", index))
    pages = {p.name for p in docs.glob("*.md")} - {"README.md"}
    assert pages - linked == set(), "docs/README.md does not link these pages"
    assert linked - pages == set(), "docs/README.md links pages that do not exist"
