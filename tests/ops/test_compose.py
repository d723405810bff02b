"""ops/compose.yaml, without Docker: it parses, and once its ${VARIABLES} are filled in from
ops/.env.example (as Docker Compose does from ops/.env) it validates against the Compose
specification's JSON schema (the copy check-jsonschema ships, so nothing is downloaded). Then what
the schema cannot say: referenced files exist, every long-running service has a health check,
Traefik routes /api (stripped) and not /metrics to two API replicas that wait for the migration,
every variable is documented, memory follows ops/sizing.toml."""

import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema

from saas.config import Settings
from tests.ops.support import (
    ENV_EXAMPLE,
    OPS,
    env_example,
    env_example_lines,
    mebibytes,
    memory_plan,
)

COMPOSE = OPS / "compose.yaml"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME; $$ is a "$".
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)
# Docker's memory units (binary, case-insensitive; "M" is MiB).
_DOCKER_UNITS = {"m": 2**20, "M": 2**20, "g": 2**30, "G": 2**30}


def raw() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def interpolate(value: Any, variables: dict[str, str], seen: set[str]) -> Any:
    """Compose's interpolation, applied to every string value (never to keys)."""
    if isinstance(value, dict):
        return {key: interpolate(item, variables, seen) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, variables, seen) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["plain"]
        seen.add(name)
        return variables.get(name, "")  # an unset one is reported by the test on variables

    return _VARIABLE.sub(replace, value)


def strings(value: Any) -> Iterator[str]:
    """Every string value in a document (what Compose interpolates; comments are not)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def compose() -> dict[str, Any]:
    document: dict[str, Any] = interpolate(raw(), env_example(), set())
    return document


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def compose_errors(document: dict[str, Any]) -> list[str]:
    schema = get_builtin_schema("vendor.compose-spec")
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_valid_per_the_compose_specification() -> None:
    assert compose_errors(compose()) == []


def test_the_schema_check_reports_what_it_should() -> None:
    """The schema is loaded and applied: an unknown key and a wrong type are each reported."""
    misspelt = compose()
    misspelt["services"]["api"]["healthchek"] = misspelt["services"]["api"].pop("healthcheck")
    assert any("'healthchek' was unexpected" in error for error in compose_errors(misspelt))
    mistyped = compose()
    mistyped["services"]["api"]["stop_grace_period"] = 45  # a duration is a string: "45s"
    assert any("45 is not of type 'string'" in error for error in compose_errors(mistyped))


def test_every_variable_is_documented_and_has_no_default_of_its_own() -> None:
    """What runs is what ops/.env says: each variable compose.yaml uses is required there
    (${NAME:?...}), set in .env.example under a comment, and .env.example sets nothing unused."""
    for value in strings(raw()):
        for match in _VARIABLE.finditer(value):
            if match["escaped"]:
                continue
            assert match["braced"] and match["rest"].startswith(":?"), (
                f"{match[0]}: write ${{NAME:?...}}, so a missing setting stops `docker compose`"
            )
    used: set[str] = set()
    interpolate(raw(), env_example(), used)
    assert used - set(env_example()) == set(), "used in compose.yaml, not set in .env.example"
    assert set(env_example()) - used == set(), "set in .env.example, not used in compose.yaml"
    comment_above = False
    for line in env_example_lines():
        if line.startswith("#"):
            comment_above = True
        elif not line.strip():
            comment_above = False
        else:
            name = line.partition("=")[0]
            assert comment_above, f"{ENV_EXAMPLE.name}: {name} has no comment saying what it is"


def test_referenced_files_exist() -> None:
    for name, service in services().items():
        build = service.get("build")
        if build is not None:
            context = OPS / (build if isinstance(build, str) else build["context"])
            assert context.is_dir(), f"{name}: build context {context} is missing"
            dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else ""
            assert (context / (dockerfile or "Dockerfile")).is_file(), f"{name}: no Dockerfile"
        for env_file in service.get("env_file", []):
            path = env_file if isinstance(env_file, str) else env_file["path"]
            assert (OPS / path).is_file(), f"{name}: env_file {path} is missing"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "~")):
                assert (OPS / source).exists(), f"{name}: bind mount {source} is missing"
            elif source.startswith("/"):
                # Host paths are not the repository's; the only one used is Docker's socket.
                assert source == "/var/run/docker.sock", f"{name}: unexpected host path {source}"
            else:
                assert source in compose()["volumes"], f"{name}: volume {source} not declared"
    for kind in ("configs", "secrets"):
        for name, item in compose().get(kind, {}).items():
            if "file" in item:
                assert (OPS / item["file"]).exists(), f"{kind} {name}: {item['file']} is missing"


def one_shot(name: str) -> bool:
    """Run once to completion: something waits for it to complete, and it is never restarted."""
    awaited = any(
        isinstance(other.get("depends_on"), dict)
        and other["depends_on"].get(name, {}).get("condition") == "service_completed_successfully"
        for other in services().values()
    )
    return awaited and services()[name].get("restart") == "no"


def test_every_long_running_service_has_a_health_check() -> None:
    for name, service in services().items():
        if one_shot(name):
            continue
        healthcheck = service.get("healthcheck", {})
        assert healthcheck.get("test") and not healthcheck.get("disable"), name
        assert service.get("restart") in ("always", "unless-stopped"), name


def test_api_replicas_wait_for_the_migration_and_their_dependencies() -> None:
    api = services()["api"]
    assert api["deploy"]["replicas"] == 2
    assert api["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    migrate = services()["migrate"]
    assert one_shot("migrate")
    assert migrate["command"] == ["saas", "migrate"]
    assert migrate["image"] == api["image"] and migrate["build"] == api["build"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "/healthz" in " ".join(api["healthcheck"]["test"])


def test_traefik_routes_api_stripped_to_the_replicas_and_never_metrics() -> None:
    all_services = services()
    api, traefik = all_services["api"], all_services["traefik"]
    labels: dict[str, str] = api["labels"]
    assert labels["traefik.enable"] == "true"
    [router] = {key.split(".")[3] for key in labels if key.startswith("traefik.http.routers.")}
    rule = labels[f"traefik.http.routers.{router}.rule"]
    assert "PathPrefix(`/api`)" in rule and "!PathPrefix(`/api/metrics`)" in rule, rule
    [middleware] = labels[f"traefik.http.routers.{router}.middlewares"].split(",")
    assert labels[f"traefik.http.middlewares.{middleware}.stripprefix.prefixes"] == "/api"
    assert api["environment"]["SAAS_ROOT_PATH"] == "/api"
    [service] = {key.split(".")[3] for key in labels if key.startswith("traefik.http.services.")}
    balancer = f"traefik.http.services.{service}.loadbalancer"
    assert labels[f"{balancer}.server.port"] == "8000"
    assert labels[f"{balancer}.healthcheck.path"] == "/readyz"
    # Only Traefik is reachable from outside: the API's port (and /metrics on it) is not.
    assert [name for name, s in all_services.items() if s.get("ports")] == ["traefik"]
    assert "--providers.docker.exposedbydefault=false" in traefik["command"]
    # Traefik reaches the replicas on the network they share.
    edge = compose()["networks"]["edge"]["name"]
    assert f"--providers.docker.network={edge}" in traefik["command"]
    assert labels["traefik.docker.network"] == edge
    assert "edge" in api["networks"] and traefik["networks"] == ["edge"]
    assert any("X-Request-Id=keep" in arg for arg in traefik["command"])


def test_postgres_and_redis_keep_their_data_in_named_volumes() -> None:
    declared = compose()["volumes"]
    for name, path in (("postgres", "/var/lib/postgresql/data"), ("redis", "/data")):
        [volume] = services()[name]["volumes"]
        source, target = volume.split(":")[:2]
        assert source in declared and target == path, volume
        assert services()[name]["networks"] == ["backend"]
    assert compose()["networks"]["backend"].get("internal") is True


@pytest.mark.parametrize("service", ["traefik", "postgres", "redis"])
def test_images_are_pinned_to_a_release(service: str) -> None:
    image = services()[service]["image"]
    # A release (major.minor at least: PostgreSQL's minor is its patch), never a moving tag.
    assert re.fullmatch(r"[a-z0-9./-]+:v?\d+\.\d+(\.\d+)?(-[a-z0-9]+)?", image), image


def test_api_memory_follows_the_plan_and_shutdown_outlasts_gunicorn() -> None:
    settings = env_example()
    workers = int(settings["SAAS_WORKERS"])
    plan = memory_plan()
    resources = services()["api"]["deploy"]["resources"]
    assert mebibytes(resources["reservations"]["memory"], _DOCKER_UNITS) == plan.planned(workers), (
        f"API_MEMORY_RESERVATION: want {plan.planned(workers)}M for {workers} workers"
    )
    assert mebibytes(resources["limits"]["memory"], _DOCKER_UNITS) == plan.limit(workers), (
        f"API_MEMORY_LIMIT: want {plan.limit(workers)}M for {workers} workers"
    )
    grace = re.fullmatch(r"(\d+)s", services()["api"]["stop_grace_period"])
    assert grace and int(grace[1]) > int(settings["SAAS_GRACEFUL_TIMEOUT"])


def test_env_example_holds_no_credential() -> None:
    assert env_example()["POSTGRES_PASSWORD"] == "change-me"


def test_traefik_times_out_slow_clients_before_the_api() -> None:
    """Uvicorn waits for a request's headers as long as a client likes (saas/server/protocol.py
    bounds it in the app, SAAS_BODY_TIMEOUT the body): the proxy in front must too, no later
    than the app does, in both of its configurations."""
    static = yaml.safe_load((OPS / "traefik" / "traefik.yml").read_text())
    timeouts = static["entryPoints"]["web"]["transport"]["respondingTimeouts"]
    flags = dict(
        flag.removeprefix("--").split("=", 1)
        for flag in services()["traefik"]["command"]
        if "respondingtimeouts" in flag.lower()
    )
    body_timeout = Settings(_env_file=None).body_timeout
    for read_timeout in (
        timeouts["readTimeout"],
        flags["entrypoints.web.transport.respondingtimeouts.readtimeout"],
    ):
        assert read_timeout.endswith("s") and 0 < int(read_timeout[:-1]) <= body_timeout
    assert (
        timeouts["idleTimeout"] == flags["entrypoints.web.transport.respondingtimeouts.idletimeout"]
    )
