"""No Docker engine runs here: parse the Dockerfiles and check they install the tested way."""

import tomllib

import pytest
import yaml

from helpers import REPO

dockerfile = pytest.importorskip("dockerfile")


@pytest.mark.parametrize("name,extras", [("Dockerfile.cpu", "cpu,ingest,postgres"), ("Dockerfile.cuda", "gpu,ingest")])
def test_dockerfiles_use_the_install_script(name, extras):
    commands = dockerfile.parse_file(str(REPO / "docker" / name))
    runs = [" ".join(c.value) for c in commands if c.cmd == "RUN"]
    assert any(f"scripts/install.sh /opt/venv {extras}" in r for r in runs)
    copies = {c.value[0] for c in commands if c.cmd == "COPY"}
    # every package pyproject installs (the images once left out distill and experiments: `curator worker`
    # and `curator bench kt` died in them on an ImportError)
    installed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for package in (*(p.rstrip("*") for p in installed["include"]), "scripts", "pyproject.toml"):
        assert any(package in c for c in copies), package
        assert (REPO / package).exists()
    entry = [c for c in commands if c.cmd == "ENTRYPOINT"]
    assert entry and "curator" in entry[0].value[0]


def test_compose_runs_the_service_on_a_volume():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    svc = compose["services"]["curator"]
    assert svc["build"]["dockerfile"] == "docker/Dockerfile.cpu" and "./data:/data" in svc["volumes"]
    assert (REPO / svc["build"]["dockerfile"]).exists()
