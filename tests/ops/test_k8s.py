"""ops/k8s/, without a cluster: every manifest validates, strictly (unknown fields refused), with
kubernetes-validate against the Kubernetes schemas it ships (no download), for the oldest
Kubernetes the manifests claim and the newest the package knows. Traefik's Middleware is a CRD
those schemas do not have: its metadata is checked as Kubernetes' ObjectMeta and its spec against
MIDDLEWARE_SPEC below (the Traefik fields used here, from Traefik v3's reference; nothing else
allowed). Then what no schema says: the objects refer to each other correctly, probes, shutdown
and memory follow the settings and ops/sizing.toml, the pods run as the image's non-root user, and
only /api is public, with /api/metrics refused."""

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.ops.support import OPS, dockerfile_user, mebibytes, memory_plan

K8S = OPS / "k8s"
OLDEST = "1.30"  # the oldest Kubernetes these manifests are for (README, Deploy)
VERSIONS = [OLDEST, kubernetes_validate.latest_version()]
_KUBERNETES_UNITS = {"Mi": 2**20, "Gi": 2**30}

MIDDLEWARE_SPEC: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": False,
    "properties": {
        "stripPrefix": {
            "type": "object",
            "additionalProperties": False,
            "required": ["prefixes"],
            "properties": {
                "prefixes": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string", "pattern": "^/"},
                },
            },
        },
        "ipAllowList": {
            "type": "object",
            "additionalProperties": False,
            "required": ["sourceRange"],
            "properties": {
                "sourceRange": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "rejectStatusCode": {"type": "integer"},
            },
        },
    },
}
# CRDs (apiVersion, kind) -> the schema of their spec.
CUSTOM_RESOURCES = {("traefik.io/v1alpha1", "Middleware"): MIDDLEWARE_SPEC}


def load_manifests() -> list[tuple[str, dict[str, Any]]]:
    manifests = []
    for path in sorted(K8S.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is None:
                continue
            assert isinstance(document, dict), f"{path}: not a mapping"
            name = f"{path.relative_to(K8S)}:{document['kind']}/{document['metadata']['name']}"
            manifests.append((name, document))
    return manifests


MANIFESTS = load_manifests()


def validate(manifest: dict[str, Any], version: str) -> None:
    spec_schema = CUSTOM_RESOURCES.get((manifest["apiVersion"], manifest["kind"]))
    if spec_schema is None:
        kubernetes_validate.validate(manifest, version, strict=True)
        return
    assert set(manifest) <= {"apiVersion", "kind", "metadata", "spec"}, sorted(manifest)
    # The metadata of any object is an ObjectMeta: checked as a ConfigMap's.
    metadata_only = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": manifest["metadata"]}
    kubernetes_validate.validate(metadata_only, version, strict=True)
    jsonschema.Draft202012Validator(spec_schema).validate(manifest["spec"])


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("manifest", [m for _, m in MANIFESTS], ids=[name for name, _ in MANIFESTS])
def test_manifest_is_valid(manifest: dict[str, Any], version: str) -> None:
    validate(manifest, version)


def test_validation_reports_what_it_should() -> None:
    """The checks really check: a misspelt field, a wrong type, an unknown kind and a wrong
    Middleware each fail."""
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        validate(deployment, OLDEST)
    container["livenessProbe"] = container.pop("livenesProbe")
    container["startupProbe"]["failureThreshold"] = "forty"
    with pytest.raises(kubernetes_validate.ValidationError, match="forty"):
        validate(deployment, OLDEST)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate({"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute"}, OLDEST)
    middleware = one("Middleware", "strip-api-prefix")
    broken = {**middleware, "spec": {"stripPrefix": {"prefix": "/api"}}}
    with pytest.raises(jsonschema.ValidationError, match="prefixes"):
        validate(broken, OLDEST)


def all_of(kind: str) -> list[dict[str, Any]]:
    return [manifest for _, manifest in MANIFESTS if manifest["kind"] == kind]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [m for m in all_of(kind) if name is None or m["metadata"]["name"] == name]
    assert len(found) == 1, f"want one {kind} {name or ''}, found {len(found)}"
    return found[0]


def deployment() -> dict[str, Any]:
    return one("Deployment")


def pod(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "CronJob":
        workload = workload["spec"]["jobTemplate"]
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def settings() -> dict[str, str]:
    data: dict[str, str] = one("ConfigMap", "saas-config")["data"]
    return data


def test_every_object_is_in_the_namespace() -> None:
    namespace = one("Namespace")["metadata"]["name"]
    for name, manifest in MANIFESTS:
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"].get("namespace") == namespace, name


def test_probes_and_a_shutdown_that_drains_before_gunicorn_stops() -> None:
    [container] = pod(deployment())["containers"]
    port_names = {port["name"] for port in container["ports"]}
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in port_names, probe
        paths[probe] = container[probe]["httpGet"]["path"]
    assert paths == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > 180  # model loading, at most
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    drain = int(command[1])
    graceful = int(settings()["SAAS_GRACEFUL_TIMEOUT"])
    assert pod(deployment())["terminationGracePeriodSeconds"] >= graceful + drain


def test_resources_follow_the_memory_plan_and_the_workers() -> None:
    workers = int(settings()["SAAS_WORKERS"])
    plan = memory_plan()
    [container] = pod(deployment())["containers"]
    resources = container["resources"]
    request = mebibytes(resources["requests"]["memory"], _KUBERNETES_UNITS)
    limit = mebibytes(resources["limits"]["memory"], _KUBERNETES_UNITS)
    assert (request, limit) == (plan.planned(workers), plan.limit(workers)), (
        f"memory for {workers} workers per ops/sizing.toml: request "
        f"{plan.planned(workers)}Mi, limit {plan.limit(workers)}Mi"
    )
    assert resources["requests"]["cpu"] == str(workers)  # a core per inference process


@pytest.mark.parametrize("kind", ["Deployment", "Job", "CronJob"])
def test_runs_as_the_images_non_root_user_with_nothing_to_spare(kind: str) -> None:
    uid, gid = dockerfile_user()
    spec = pod(one(kind))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (
        uid,
        gid,
    )
    assert spec["automountServiceAccountToken"] is False
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        # A read-only root needs a writable /tmp (Gunicorn's heartbeat files).
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("kind", ["Deployment", "Job", "CronJob"])
def test_settings_come_from_the_configmap_and_the_secret(kind: str) -> None:
    [container] = pod(one(kind))["containers"]
    sources = container["envFrom"]
    assert [source.get("configMapRef", {}).get("name") for source in sources][0] == "saas-config"
    [secret_name] = [s["secretRef"]["name"] for s in sources if "secretRef" in s]
    secret = one("Secret", secret_name)
    assert set(secret["stringData"]) == {"SAAS_DATABASE_URL", "SAAS_REDIS_URL"}
    for key in settings():
        assert not any(word in key for word in ("URL", "PASSWORD", "SECRET", "TOKEN")), key


def test_the_secret_is_only_an_example() -> None:
    [(name, secret)] = [(n, m) for n, m in MANIFESTS if m["kind"] == "Secret"]
    assert name.startswith("examples/"), "kubectl apply -f ops/k8s/ must not apply it"
    for key, value in secret["stringData"].items():
        assert "REPLACE-ME" in value, f"{key}: a placeholder, never a credential"


def test_service_autoscaler_and_budget_select_the_api_pods() -> None:
    api = deployment()
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert api["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "replicas" not in api["spec"], "the HorizontalPodAutoscaler owns the replica count"
    service = one("Service", "saas-api")
    assert service["spec"]["selector"].items() <= labels.items()
    [container] = pod(api)["containers"]
    port_names = {port["name"] for port in container["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", api["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    budget = one("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"] == api["spec"]["selector"]["matchLabels"]


def middleware_of(ingress: dict[str, Any]) -> dict[str, Any]:
    """The Middleware an Ingress's Traefik annotation names (<namespace>-<name>@kubernetescrd)."""
    reference = ingress["metadata"]["annotations"][
        "traefik.ingress.kubernetes.io/router.middlewares"
    ]
    namespace = ingress["metadata"]["namespace"]
    assert reference.startswith(f"{namespace}-") and reference.endswith("@kubernetescrd"), (
        f"{reference}: want {namespace}-<Middleware name>@kubernetescrd"
    )
    return one("Middleware", reference.removeprefix(f"{namespace}-").removesuffix("@kubernetescrd"))


def test_only_api_is_public_stripped_and_metrics_refused() -> None:
    service = one("Service", "saas-api")
    routes: dict[str, dict[str, Any]] = {}
    for ingress in all_of("Ingress"):
        assert ingress["spec"]["ingressClassName"] == "traefik"
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == service["metadata"]["name"]
                assert backend["port"]["name"] in {
                    port["name"] for port in service["spec"]["ports"]
                }
                assert path["pathType"] == "Prefix"
                routes[path["path"]] = middleware_of(ingress)["spec"]
    assert set(routes) == {"/api", "/api/metrics"}
    assert routes["/api"] == {"stripPrefix": {"prefixes": [settings()["SAAS_ROOT_PATH"]]}}
    assert settings()["SAAS_ROOT_PATH"] == "/api"
    assert routes["/api/metrics"] == {"ipAllowList": {"sourceRange": ["127.0.0.1/32"]}}


def test_the_migration_job_runs_saas_migrate_from_the_same_image() -> None:
    job = one("Job")
    [container] = pod(job)["containers"]
    [api] = pod(deployment())["containers"]
    assert container["image"] == api["image"] and not api["image"].endswith(":latest")
    assert container["command"] == ["saas", "migrate"]
    assert pod(job)["restartPolicy"] == "Never"


def test_the_maintenance_cronjob_runs_saas_maintain_daily_one_at_a_time() -> None:
    cronjob = one("CronJob", "saas-maintain")
    [container] = pod(cronjob)["containers"]
    [api] = pod(deployment())["containers"]
    assert container["image"] == api["image"]
    assert container["command"] == ["saas", "maintain"]
    assert pod(cronjob)["restartPolicy"] == "Never"
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"  # two runs would only wait for each other
    minute, hour, *every = spec["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and every == ["*", "*", "*"], "once a day"
