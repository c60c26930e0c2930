"""docker/k8s-operator: the overlay kustomize renders, its FlinkDeployment checked against the
Flink Kubernetes Operator's own custom resource definition (from the operator's API jar on
Maven Central), with unknown fields refused as ``kubectl --validate=strict`` refuses them."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import zipfile

import jsonschema_rs
import pytest
import yaml

from rendezvous.settings import REPO_ROOT, StackSettings
from rendezvous.stack import jars

pytestmark = pytest.mark.unit

DOCKER = REPO_ROOT / "docker"
OVERLAY = DOCKER / "k8s-operator"
IMAGES = {"localhost/rendezvous", "localhost/rendezvous-kafka"}
DATA = "/var/lib/rendezvous/data"
CRD = "META-INF/fabric8/flinkdeployments.flink.apache.org-v1.yml"
# Maven Central's newest operator API is 1.10, whose flinkVersion enum ends at v1_20. The
# operators after it add the Flink 2 releases to that enum (FlinkVersion.java; v2_3 from 1.15)
# and change nothing else this overlay uses, so the check adds them.
FLINK_2 = ["v2_0", "v2_1", "v2_2", "v2_3", "v2_4"]


def kustomize() -> str:
    binary = shutil.which("kustomize", path=str(REPO_ROOT / ".venv" / "bin"))
    binary = binary or shutil.which("kustomize")
    assert binary, "kustomize is missing: `make .venv/bin/kustomize` (make test installs it)"
    return binary


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    out = subprocess.run(
        [kustomize(), "build", str(OVERLAY)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def schema() -> dict:
    folder = jars.ensure_jars(StackSettings.from_env(), log=lambda msg: None) / "k8s"
    (jar,) = folder.glob("flink-kubernetes-operator-api-*.jar")
    with zipfile.ZipFile(jar) as archive:
        crd = yaml.safe_load(archive.read(CRD))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    enum = schema["properties"]["spec"]["properties"]["flinkVersion"]["enum"]
    enum += [v for v in FLINK_2 if v not in enum]
    return schema


def unknown_fields(node: object, schema: dict, path: str = "") -> list[str]:
    """Fields of ``node`` the schema does not name, where it allows no others."""
    found = []
    if isinstance(node, dict) and schema.get("type", "object") == "object":
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return []
        known = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in node.items():
            if key in known:
                found += unknown_fields(value, known[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(value, extra, f"{path}.{key}")
            elif not extra:
                found.append(f"{path}.{key}")
    elif isinstance(node, list) and "items" in schema:
        for i, item in enumerate(node):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def problems(resource: dict, schema: dict) -> list[str]:
    # The API server checks the fields every object has; the definition covers the rest.
    resource = {k: v for k, v in resource.items() if k not in ("apiVersion", "kind", "metadata")}
    errors = [
        f"{'/'.join(map(str, e.instance_path))}: {e.message}"
        for e in jsonschema_rs.Draft4Validator(schema).iter_errors(resource)
    ]
    return errors + [f"{p}: not a field of the resource" for p in unknown_fields(resource, schema)]


def flink_deployment(docs: list[dict]) -> dict:
    (found,) = [d for d in docs if d["kind"] == "FlinkDeployment"]
    return found


def test_the_flink_deployment_is_valid_for_the_operator(rendered, schema):
    resource = flink_deployment(rendered)
    assert resource["apiVersion"] == "flink.apache.org/v1beta1"
    assert problems(resource, schema) == []


def test_the_check_refuses_a_misspelt_field_a_wrong_type_and_an_unknown_flink_version(
    rendered, schema
):
    resource = flink_deployment(rendered)
    misspelt = copy.deepcopy(resource)
    misspelt["spec"]["taskManager"]["resource"]["memroy"] = "2048m"
    assert problems(misspelt, schema) == [
        ".spec.taskManager.resource.memroy: not a field of the resource"
    ]
    wrong = copy.deepcopy(resource)
    wrong["spec"]["jobManager"]["replicas"] = "one"
    assert any("replicas" in p for p in problems(wrong, schema))
    old = copy.deepcopy(resource)
    old["spec"]["flinkVersion"] = "v9_9"
    assert any("flinkVersion" in p for p in problems(old, schema))
    pod = copy.deepcopy(resource)
    pod["spec"]["podTemplate"]["spec"]["containers"][0]["volumeMount"] = []
    assert any(
        p.endswith("volumeMount: not a field of the resource") for p in problems(pod, schema)
    )


def test_the_cluster_runs_the_flink_release_the_project_pins():
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    major, minor = re.search(r'"apache-flink==(\d+)\.(\d+)\.\d+"', pyproject).groups()
    resource = yaml.safe_load((OVERLAY / "flink.yaml").read_text())
    assert resource["spec"]["flinkVersion"] == f"v{major}_{minor}"


def test_the_cluster_has_the_projects_flink_options():
    project = yaml.safe_load((REPO_ROOT / "flink-conf.yaml").read_text())
    resource = yaml.safe_load((OVERLAY / "flink.yaml").read_text())
    conf = resource["spec"]["flinkConfiguration"]
    for key, value in project.items():
        assert str(conf.get(key)) == str(value), key
    assert all(isinstance(v, str) for v in conf.values()), "the operator takes strings"


def test_the_plain_flink_deployments_give_way_to_the_operators_cluster(rendered):
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    assert not {("Deployment", "jobmanager"), ("Deployment", "taskmanager")} & kinds
    assert ("Service", "jobmanager") not in kinds
    assert {("Deployment", "kafka"), ("Deployment", "mlflow"), ("Deployment", "proxy")} <= kinds
    assert {("Job", "setup"), ("PersistentVolumeClaim", "rendezvous-data")} <= kinds
    for d in rendered:
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "rendezvous", d["kind"]


def test_setup_and_the_proxy_reach_the_operators_rest_service(rendered):
    resource = flink_deployment(rendered)
    profile = yaml.safe_load((DOCKER / "profiles.yaml").read_text())["profiles"]["operator"]
    # The operator's REST Service of a FlinkDeployment is named <name>-rest, on the REST port.
    port = int(resource["spec"]["flinkConfiguration"].get("rest.port", 8081))
    assert profile["flink_rest_url"] == f"http://{resource['metadata']['name']}-rest:{port}"
    conf = resource["spec"]["flinkConfiguration"]
    assert profile["flink_python"] == conf["python.executable"] == conf["python.client.executable"]
    for d in rendered:
        if d["kind"] not in ("Deployment", "Job") or d["metadata"]["name"] not in (
            "setup",
            "proxy",
        ):
            continue
        spec = d["spec"]["template"]["spec"]
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env.get("RDV_PROFILE") == "operator", (d["metadata"]["name"], c["name"])


def test_the_flink_pods_run_the_image_and_mount_the_shared_volume(rendered):
    resource = flink_deployment(rendered)
    assert resource["spec"]["image"].rsplit(":", 1)[0] in IMAGES
    pod = resource["spec"]["podTemplate"]["spec"]
    volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    (main,) = pod["containers"]
    assert main["name"] == "flink-main-container"  # the name the operator merges into
    mounts = {m["mountPath"]: volumes[m["name"]] for m in main["volumeMounts"]}
    assert mounts[DATA] == "rendezvous-data"
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user owns /opt/flink/log
