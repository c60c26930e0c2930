"""docker/: the container entry point's Flink configuration, and the Kubernetes manifests
checked against the compose file and the image's connection profile."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import yaml

from rendezvous import container
from rendezvous.errors import ConfigError, StackError
from rendezvous.settings import REPO_ROOT

DOCKER = REPO_ROOT / "docker"
IMAGES = {"localhost/rendezvous", "localhost/rendezvous-kafka"}
DATA = "/var/lib/rendezvous/data"


def manifests() -> list[dict]:
    docs = []
    for path in sorted((DOCKER / "k8s").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def pod_specs() -> dict[str, dict]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in manifests()
        if d["kind"] in ("Deployment", "Job")
    }


def test_flink_config_binds_every_interface_and_keeps_the_project_options():
    settings = container.ContainerSettings(flink_jobmanager="jm", flink_taskmanager_slots=3)
    base = {"taskmanager.host": "localhost", "python.execution-mode": "thread"}
    conf = container.flink_config(settings, python="/opt/venv/bin/python", base=base)
    assert "taskmanager.host" not in conf  # a TaskManager advertises the address it reaches
    assert conf["python.execution-mode"] == "thread"
    assert conf["jobmanager.rpc.address"] == conf["rest.address"] == "jm"
    assert {conf[k] for k in ("jobmanager.bind-host", "taskmanager.bind-host")} == {"0.0.0.0"}
    assert conf["rest.bind-address"] == "0.0.0.0"
    assert conf["taskmanager.numberOfTaskSlots"] == 3
    assert conf["python.executable"] == "/opt/venv/bin/python"
    assert conf["execution.checkpointing.dir"] == f"file://{DATA}/flink/checkpoints"
    assert base == {"taskmanager.host": "localhost", "python.execution-mode": "thread"}


def test_a_bad_container_setting_names_the_variable():
    with pytest.raises(ConfigError, match="RDV_FLINK_TASKMANAGER_SLOTS"):
        container.ContainerSettings(
            flink_taskmanager_slots="many", _from_env={"flink_taskmanager_slots"}
        )


def test_manifests_run_the_compose_services_with_the_same_images_and_roles():
    services = compose()["services"]
    specs = pod_specs()
    assert set(specs) == set(services)
    for name, spec in specs.items():
        (main,) = spec["containers"]
        image = main["image"].rsplit(":", 1)[0]
        assert image in IMAGES, (name, image)
        wanted = services[name].get("image", compose()["x-rendezvous"]["image"])
        default = re.fullmatch(r"\$\{[A-Z_]+:-(.+)\}", wanted).group(1)  # ${RDV_IMAGE:-...}
        assert image == default.rsplit(":", 1)[0], (name, image, wanted)
        if image == "localhost/rendezvous":
            assert main["args"] == services[name]["command"], name
            for c in [main, *spec.get("initContainers", [])]:
                assert c["args"][0] in container.ROLES, (name, c["args"])


def test_the_profile_reaches_each_service_by_its_name_and_port():
    profile = yaml.safe_load((DOCKER / "profiles.yaml").read_text())["profiles"]["containers"]
    services = {
        d["metadata"]["name"]: {p["port"]: p["targetPort"] for p in d["spec"]["ports"]}
        for d in manifests()
        if d["kind"] == "Service"
    }
    host, port = profile["kafka_bootstrap"].split(":")
    addresses = [(host, int(port))]
    for key in ("flink_rest_url", "mlflow_tracking_uri"):
        url = urlsplit(profile[key])
        addresses.append((url.hostname, url.port))
    for host, port in addresses:
        assert host in services and port in services[host], (host, port, services)
        assert host in compose()["services"], host
    specs = pod_specs()
    for name, ports in services.items():
        exposed = {p["containerPort"] for c in specs[name]["containers"] for p in c["ports"]}
        assert set(ports.values()) <= exposed, (name, ports, exposed)


def test_every_component_that_reads_or_writes_the_archive_mounts_the_shared_volume():
    claims = {
        d["metadata"]["name"]: d["spec"]["accessModes"]
        for d in manifests()
        if d["kind"] == "PersistentVolumeClaim"
    }
    assert claims["rendezvous-data"] == ["ReadWriteMany"]
    shared = compose()["x-rendezvous"]["volumes"]
    assert shared == [f"data:{DATA}"]
    for name in ("jobmanager", "taskmanager", "setup", "proxy"):
        spec = pod_specs()[name]
        volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in spec["containers"][0]["volumeMounts"]}
        assert mounts.get(DATA) == "rendezvous-data", (name, mounts)
        assert compose()["services"][name].get("volumes", shared) == shared, name


def test_the_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((DOCKER / "k8s" / "kustomization.yaml").read_text())
    files = {p.name for p in (DOCKER / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert {i["name"] for i in kustomization["images"]} == IMAGES


def test_the_image_flink_home_replaces_the_bases_distribution_with_the_wheels(tmp_path):
    settings = container.ContainerSettings(home=tmp_path / "home")
    maven = settings.home / "jars" / "flink"
    maven.mkdir(parents=True)
    (maven / "flink-sql-connector-kafka-5.0.0-2.2.jar").write_bytes(b"jar")
    target = tmp_path / "opt" / "flink"
    # What the official image holds there: another release's distribution.
    (target / "lib").mkdir(parents=True)
    (target / "lib" / "flink-dist-2.2.1.jar").write_bytes(b"old")
    (target / "README.txt").write_text("old")

    container.flink_home(target, settings, python="/opt/venv/bin/python")

    assert sorted(p.name for p in target.iterdir()) == [
        "bin",
        "conf",
        "lib",
        "log",
        "opt",
        "plugins",
    ]
    lib = {p.name for p in (target / "lib").iterdir()}
    assert "flink-dist-2.2.1.jar" not in lib
    assert {"flink-sql-connector-kafka-5.0.0-2.2.jar", "flink-dist-2.3.0.jar"} <= lib
    assert any(name.startswith("flink-python") for name in lib)
    # Flink's scripts take the folder above their own as FLINK_HOME: a copy, not a link.
    assert not (target / "bin").is_symlink() and (target / "bin" / "jobmanager.sh").is_file()
    conf = yaml.safe_load((target / "conf" / "config.yaml").read_text())
    assert conf["python.executable"] == "/opt/venv/bin/python"
    assert conf["python.execution-mode"] == "thread"  # the project's options
    assert (target / "conf" / "log4j-console.properties").is_file()
    assert container._image_flink_home({"FLINK_HOME": str(target)}) == target
    assert container._image_flink_home({"FLINK_HOME": str(tmp_path)}) is None
    assert container._image_flink_home({}) is None


def test_the_image_flink_home_needs_the_jars_first(tmp_path):
    settings = container.ContainerSettings(home=tmp_path / "home")
    with pytest.raises(StackError, match="no Flink jars in .*run the `jars` step first"):
        container.flink_home(tmp_path / "flink", settings, python="/usr/bin/python3")
    assert not (tmp_path / "flink").exists()
