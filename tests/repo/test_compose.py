"""The deployment files (docker-compose.yml, Dockerfile, .dockerignore, deploy/), checked without Docker.

Three layers, from strongest to most specific:

1. The official Compose Specification JSON schema, as vendored in the ``check-jsonschema`` package
   (``vendor.compose-spec``), applied with ``jsonschema``. Skipped when check-jsonschema is missing.
2. ``docker compose config`` when a Compose v2 binary is on this machine (it needs no engine): full
   interpolation and cross-reference checks. Skipped when there is none.
3. Explicit checks of what this product needs: every command is a registered ``broadcast`` subcommand
   whose arguments parse, Redis is a durable job store, workers scale, secrets come from the
   environment, the image runs as a non-root user, and so on.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from typer.core import TyperGroup

from scheduler.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
ACCOUNTS_EXAMPLE = DEPLOY / "accounts.example.toml"
ENTRYPOINT = DEPLOY / "entrypoint.sh"

#: Service -> the ``broadcast`` subcommand it must run (redis runs no broadcast command).
SUBCOMMANDS = {
    "api": "api",
    "worker": "worker",
    "scheduler": "scheduler",
    "flower": "flower",
    "simulator": "simulator",
}
#: The ``monitoring`` profile: off-the-shelf images, no broadcast command.
MONITORING = {"prometheus", "grafana"}
#: The `ha` profile: a replica of `redis` and three Sentinels (deploy/ha/).
HA_SERVICES = {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
SERVICES = {"redis", *SUBCOMMANDS, *MONITORING, *HA_SERVICES}
HA_CONFIG = DEPLOY / "ha"
#: Long-running services without an HTTP port to probe: no healthcheck required.
NO_HEALTHCHECK = {"worker", "scheduler"}
VENDORS = {"gewe", "gewe-legacy", "ecloud", "ohwxapi"}
#: Where the image's entrypoint looks for the optional accounts file.
ACCOUNTS_IN_CONTAINER = "/etc/broadcast/accounts.toml"

SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|AUTH|API_?KEY|PRIVATE", re.IGNORECASE)
#: ``${NAME}`` or ``${NAME:?message}`` / ``${NAME?message}``: a value that only the environment gives.
#: Defaults (``${NAME:-literal}``) are refused for secrets: the literal would be a secret in the file.
FROM_ENV = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?\?[^}]*)?\}$")


# --- loading -----------------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yml as YAML (anchors and ``<<`` merge keys resolved, no interpolation)."""
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def service(name: str) -> dict[str, Any]:
    svc = services().get(name)
    assert isinstance(svc, dict), f"service {name!r} missing from docker-compose.yml"
    return svc


def command(svc: dict[str, Any]) -> list[str]:
    raw = svc.get("command")
    if raw is None:
        return []
    return shlex.split(raw) if isinstance(raw, str) else [str(part) for part in raw]


def environment(svc: dict[str, Any]) -> dict[str, str | None]:
    raw = svc.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in raw)
        return {key: value for key, value in pairs}
    return {key: None if value is None else str(value) for key, value in raw.items()}


def depends_on(svc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    raw = svc.get("depends_on") or {}
    if isinstance(raw, list):
        return {name: {"condition": "service_started"} for name in raw}
    return {name: dict(spec or {}) for name, spec in raw.items()}


def registered_commands() -> set[str]:
    """The subcommands registered on the typer app (typer turns ``_`` into ``-`` in callback names)."""
    names = (c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands)
    return {name.replace("_", "-") for name in names if name}


# --- 1. schema ---------------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec_schema() -> None:
    builtin = pytest.importorskip(
        "check_jsonschema.builtin_schemas", reason="check-jsonschema (ships the Compose Spec schema)"
    )
    import jsonschema

    schema = builtin.get_builtin_schema("vendor.compose-spec")
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors, "docker-compose.yml breaks the Compose Specification:\n" + "\n".join(errors)


def test_the_schema_check_catches_a_broken_file() -> None:
    """Guard against a schema that accepts anything (e.g. a stub or an empty vendored file)."""
    builtin = pytest.importorskip(
        "check_jsonschema.builtin_schemas", reason="check-jsonschema (ships the Compose Spec schema)"
    )
    import jsonschema

    schema = builtin.get_builtin_schema("vendor.compose-spec")
    broken = {"services": {"worker": {**service("worker"), "restart_policy": "always"}}}
    assert not jsonschema.Draft202012Validator(schema).is_valid(broken)


# --- 2. a real Compose v2, when there is one ---------------------------------------------------------


def _compose_v2() -> list[str] | None:
    """A Compose v2+ command line (the docker CLI plugin or a standalone binary), or None."""
    candidates: list[list[str]] = []
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    if standalone := shutil.which("docker-compose"):
        candidates.append([standalone])
    for cmd in candidates:
        try:
            done = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        match = re.match(r"v?(\d+)\.", done.stdout.strip())
        if done.returncode == 0 and match and int(match.group(1)) >= 2:
            return cmd
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    cmd = _compose_v2()
    if cmd is None:
        pytest.skip("no Compose v2 binary here (docker compose / docker-compose)")
    # --env-file: a developer's own .env must not satisfy the required variables below.
    base = [*cmd, "--project-directory", str(ROOT), "--env-file", os.devnull, "-f", str(COMPOSE_FILE)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    env.update(
        BROADCAST_API_TOKEN="placeholder-token",
        FLOWER_BASIC_AUTH="user:placeholder",
        BROADCAST_SECRET_KEY="placeholder-key",
    )
    for profile in ([], ["--profile", "trial"]):
        done = subprocess.run(
            [*base, *profile, "config", "--quiet"], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 0, done.stderr
    # Without the required secrets, compose must refuse (this also proves the exit code is trustworthy).
    del env["BROADCAST_API_TOKEN"]
    done = subprocess.run([*base, "config", "--quiet"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode != 0 and "BROADCAST_API_TOKEN" in done.stderr, (
        "compose accepted the file without BROADCAST_API_TOKEN (or this docker-compose hides its exit code)"
    )


# --- 3. what this product needs ----------------------------------------------------------------------


def test_compose_spec_shape() -> None:
    doc = compose()
    assert "version" not in doc, "the Compose Specification has no `version:` key"
    assert set(services()) == SERVICES
    assert "x-broadcast-env" in doc, "shared environment lives in the x-broadcast-env anchor"
    shared = doc["x-broadcast-env"]
    assert shared["BROADCAST_REDIS_URL"].startswith("${BROADCAST_REDIS_URL:-redis://redis:"), (
        "broadcast services use the redis service unless the environment names Sentinels (the ha profile)"
    )
    for name in SUBCOMMANDS.keys() - {"simulator"}:
        env = environment(service(name))
        for key, value in shared.items():
            assert env.get(key) == str(value), f"{name}: {key} is not the shared value"


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_command_is_a_registered_broadcast_subcommand(name: str) -> None:
    argv = command(service(name))
    assert argv[:1] == ["broadcast"], f"{name}: command must start with `broadcast`, got {argv}"
    sub = argv[1] if len(argv) > 1 else ""
    assert sub == SUBCOMMANDS[name], f"{name}: runs `broadcast {sub}`, expected `broadcast {SUBCOMMANDS[name]}`"
    registered = registered_commands()
    assert sub in registered, (
        f"`broadcast {sub}` is not registered on scheduler.cli.app.app (has: {sorted(registered)})"
    )
    # The arguments must parse as that command's options (nothing is run: make_context only parses).
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    cmd = group.commands[sub]
    try:
        cmd.make_context(sub, list(argv[2:]))
    except Exception as exc:
        pytest.fail(f"{name}: `{shlex.join(argv)}` does not parse: {exc}")


def test_commands_match_the_runbook() -> None:
    assert command(service("api")) == ["broadcast", "api", "--host", "0.0.0.0", "--port", "8000"]
    assert command(service("worker"))[:2] == ["broadcast", "worker"]
    assert command(service("flower")) == ["broadcast", "flower", "--address", "0.0.0.0", "--port", "5555"]
    assert command(service("simulator")) == ["broadcast", "simulator", "--host", "0.0.0.0", "--port", "8899"]


def test_flower_listens_on_the_container_interface_with_basic_auth() -> None:
    """Flower binds loopback unless told otherwise: the published port would then reach nothing."""
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    argv = command(service("flower"))
    params = group.commands["flower"].make_context("flower", list(argv[2:])).params
    assert params["address"] == "0.0.0.0", f"flower must bind the container's interface, got {params['address']!r}"
    assert params["port"] == 5555
    assert "FLOWER_BASIC_AUTH" in environment(service("flower")), "basic auth must stay on"


def test_redis_is_a_durable_job_store() -> None:
    redis = service("redis")
    assert str(redis["image"]).startswith("redis:7")
    args = " ".join(command(redis))
    assert "--appendonly yes" in args, "AOF must be on: an accepted job survives a Redis restart"
    assert "--maxmemory-policy noeviction" in args, "a job store must never evict keys"
    volumes = redis.get("volumes") or []
    named = compose().get("volumes") or {}
    data_volumes = [
        v if isinstance(v, dict) else {"source": v.split(":")[0], "target": v.split(":")[1]} for v in volumes
    ]
    assert any(v.get("target") == "/data" and v.get("source") in named for v in data_volumes), (
        "redis needs a named volume (declared under top-level volumes) on /data"
    )
    assert "ping" in " ".join(redis["healthcheck"]["test"]) and "redis-cli" in " ".join(redis["healthcheck"]["test"])
    assert not redis.get("ports"), "Redis holds jobs and vendor tokens: don't publish it"


def test_worker_scales() -> None:
    worker = service("worker")
    assert "container_name" not in worker, "a fixed container_name breaks --scale worker=N"
    assert not worker.get("ports"), "published ports break --scale worker=N"


def test_scheduler_runs_one_leader() -> None:
    scheduler = service("scheduler")
    assert "container_name" not in scheduler
    assert not scheduler.get("ports")


def test_secrets_come_from_the_environment() -> None:
    api_token = environment(service("api")).get("BROADCAST_API_TOKEN")
    assert api_token and (m := FROM_ENV.match(api_token)) and m["name"] == "BROADCAST_API_TOKEN"
    assert ":?" in api_token, "BROADCAST_API_TOKEN is required: use ${BROADCAST_API_TOKEN:?...}"
    basic_auth = environment(service("flower")).get("FLOWER_BASIC_AUTH")
    assert basic_auth and (m := FROM_ENV.match(basic_auth)) and m["name"] == "FLOWER_BASIC_AUTH"
    assert ":?" in basic_auth, "Flower must never start without basic auth: use ${FLOWER_BASIC_AUTH:?...}"


def test_no_secret_literal_in_the_compose_file() -> None:
    found: list[str] = []
    for name, svc in services().items():
        for key, value in environment(svc).items():
            # ``…__FILE`` names where a secret file is mounted (compose ``secrets:``), not the secret itself
            secret_file = key.endswith("__FILE") and str(value).startswith("/run/secrets/")
            if SECRET_NAME.search(key) and value is not None and not FROM_ENV.match(value) and not secret_file:
                found.append(f"{name}.environment.{key} = {value!r}")
        build = svc.get("build")
        build_args = build.get("args") if isinstance(build, dict) else None
        for key in build_args or {}:
            if SECRET_NAME.search(str(key).split("=")[0]):
                found.append(f"{name}.build.args.{key}: build arguments end up in the image history")
        for arg in command(svc):
            if re.match(r"--(basic[-_]auth|password|token|api[-_]key)\b", arg):
                found.append(f"{name}.command has {arg!r}: pass it through the environment")
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for match in re.finditer(r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]*:[^/\s@'\"]+@", text):
        found.append(f"credentials in a URL: {match.group(0)!r}")
    for match in re.finditer(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}", text):
        found.append(f"literal credential: {match.group(0)!r}")
    for demo in ("demo-gewe-token", "demo-legacy-token", "demo-ecloud-auth"):
        if demo in text:
            found.append(f"vendor token {demo!r}")
    assert not found, "secrets must come from the environment:\n" + "\n".join(found)


def test_simulator_is_behind_a_profile() -> None:
    assert "trial" in (service("simulator").get("profiles") or [])
    for name, svc in services().items():
        if not svc.get("profiles"):
            assert "simulator" not in depends_on(svc), f"{name} depends on the profile-only simulator"


def test_monitoring_is_a_profile_scraping_the_api_with_a_secret_key(redis_url: str) -> None:
    """Prometheus + Grafana only with ``--profile monitoring``; the scrape key and the Grafana password come
    from the environment as secret files; the provisioned dashboard asks only for metrics the API serves."""
    for name in MONITORING:
        svc = service(name)
        assert svc.get("profiles") == ["monitoring"], f"{name}: behind the monitoring profile"
        assert all(str(p).startswith("127.0.0.1:") for p in svc.get("ports") or []), f"{name}: loopback only"
        for key in environment(svc):
            assert not (SECRET_NAME.search(key) and not key.endswith("__FILE")), f"{name}.{key}: use a secret file"
    secrets = compose()["secrets"]
    assert secrets["metrics_key"] == {"environment": "BROADCAST_METRICS_KEY"}
    assert secrets["grafana_admin_password"] == {"environment": "GRAFANA_ADMIN_PASSWORD"}
    assert environment(service("grafana"))["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    for name in set(SUBCOMMANDS) | {"redis"}:
        assert not set(depends_on(service(name))) & MONITORING, f"{name} must run without the monitoring profile"

    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["api:8000"] and job["metrics_path"] == "/metrics"
    assert job["authorization"]["credentials_file"] == "/run/secrets/metrics_key"
    mounts = {m["source"]: m["target"] for m in service("prometheus")["volumes"] if isinstance(m, dict)}
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"

    mounts = {m["source"]: m["target"] for m in service("grafana")["volumes"] if isinstance(m, dict)}
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    provider = yaml.safe_load((provisioning / "dashboards" / "broadcast.yml").read_text(encoding="utf-8"))
    assert mounts["./deploy/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    uid = datasource["datasources"][0]["uid"]
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"

    import json

    import redis

    from scheduler.api.metrics import RedisCollector

    dashboards = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    assert dashboards, "a dashboard ships in deploy/grafana/dashboards/"
    served = {
        family.name + suffix
        for family in RedisCollector(redis.Redis.from_url(redis_url), "tmonitoring").collect()
        for suffix in ({"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",)))
    }
    for path in dashboards:
        board = json.loads(path.read_text(encoding="utf-8"))
        assert board["uid"] and board["panels"], path.name
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == uid, f"{path.name}: {panel['title']} uses another data source"
            for target in panel["targets"]:
                used = set(re.findall(r"\bbroadcast_[a-z_]+", target["expr"]))
                assert used and used <= served, f"{path.name}: {panel['title']} asks for {used - served}"


def test_long_running_services_restart_and_report_health() -> None:
    for name, svc in services().items():
        assert svc.get("restart") == "unless-stopped", f"{name}: restart: unless-stopped"
        if name in NO_HEALTHCHECK:
            continue
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: needs a healthcheck"


def test_http_healthchecks_use_python_on_the_right_port() -> None:
    """python:3.11-slim has no curl or wget: HTTP probes run the interpreter against their own port."""
    probes = {"api": ":8000/healthz", "flower": ":5555/", "simulator": ":8899/_sim/health"}
    for name, fragment in probes.items():
        test = service(name)["healthcheck"]["test"]
        joined = test if isinstance(test, str) else " ".join(test)
        assert "python" in joined and fragment in joined, f"{name}: healthcheck {joined!r}"
        assert "curl" not in joined and "wget" not in joined


def test_services_wait_for_a_healthy_redis() -> None:
    for name, svc in services().items():
        for target, spec in depends_on(svc).items():
            assert target in services(), f"{name} depends on unknown service {target!r}"
            if spec.get("condition") == "service_healthy":
                assert service(target).get("healthcheck"), f"{name} waits for {target}, which has no healthcheck"
        if name in SUBCOMMANDS and name != "simulator":
            redis = depends_on(svc).get("redis")
            assert redis and redis.get("condition") == "service_healthy", f"{name}: depends_on redis service_healthy"


def test_published_ports() -> None:
    def published(name: str) -> list[str]:
        return [str(p) for p in service(name).get("ports") or []]

    assert any(p.endswith("8000:8000") for p in published("api"))
    assert any(p.endswith("5555:5555") for p in published("flower"))
    assert all(p.startswith("127.0.0.1:") for p in published("simulator")), "the simulator's admin API has no auth"


def test_accounts_file_is_mounted_read_only() -> None:
    for name in SUBCOMMANDS.keys() - {"simulator"}:
        mounts = service(name).get("volumes") or []
        ok = False
        for mount in mounts:
            if isinstance(mount, str):
                source, target, *mode = mount.split(":")
                read_only = "ro" in (mode[0].split(",") if mode else [])
            else:
                source, target, read_only = (
                    mount.get("source", ""),
                    mount.get("target", ""),
                    bool(mount.get("read_only")),
                )
            source = source.removeprefix("./").rstrip("/")
            if source in ("deploy", "deploy/accounts.toml"):
                assert read_only, f"{name}: {source} must be mounted read-only"
                in_container = target if source.endswith(".toml") else f"{target.rstrip('/')}/accounts.toml"
                assert in_container == ACCOUNTS_IN_CONTAINER, f"{name}: the entrypoint reads {ACCOUNTS_IN_CONTAINER}"
                ok = True
        assert ok, f"{name}: mount ./deploy (or ./deploy/accounts.toml) read-only"


def test_accounts_example_has_one_commented_account_per_vendor() -> None:
    from worker.store.accounts import AccountSpec

    text = ACCOUNTS_EXAMPLE.read_text(encoding="utf-8")
    assert tomllib.loads(text).get("accounts") is None, "every example stays commented out"
    uncommented = re.sub(r"(?m)^# (\[\[accounts\]\]|[a-z_]+ = )", r"\1", text)
    entries = tomllib.loads(uncommented)["accounts"]
    assert {e["vendor"] for e in entries} == VENDORS and len(entries) == len(VENDORS)
    for entry in entries:
        fields = dict(entry)
        assert {"id", "vendor", "base_url", "token", "instance", "limits"} <= fields.keys()
        assert fields["limits"] == {"per_minute": 30}
        fields.pop("id")
        AccountSpec.model_validate(fields)


def test_entrypoint_sets_the_accounts_file_only_when_given() -> None:
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh")
    show = ["sh", "-c", 'printf %s "${BROADCAST_ACCOUNTS_FILE-<unset>}"']
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for given, expected in (("", "<unset>"), ("/srv/accounts.toml", "/srv/accounts.toml")):
        done = subprocess.run(
            [sh, str(ENTRYPOINT), *show],
            env={**env, "BROADCAST_ACCOUNTS_FILE": given},
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        if Path(ACCOUNTS_IN_CONTAINER).is_file() and not given:
            expected = ACCOUNTS_IN_CONTAINER
        assert done.stdout == expected


# --- the image ---------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    result: list[tuple[str, str]] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_is_python_311() -> None:
    froms = [args.split() for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert froms, "no FROM"
    stages = {words[-1] for words in froms if len(words) >= 3 and words[-2].upper() == "AS"}
    external = [words[0] for words in froms if words[0] not in stages]
    assert external and all(base.startswith("python:3.11") for base in external), external
    assert final_stage()[0][1].split()[0] == "python:3.11-slim"


def test_dockerfile_installs_the_package() -> None:
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    assert any(re.search(r"\bpip install --no-cache-dir \.(\s|$)", run) for run in runs), runs


def test_dockerfile_runs_as_non_root() -> None:
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users, "the final stage needs a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"runs as {users[-1]}"


def test_dockerfile_default_command_and_no_baked_secrets() -> None:
    cmds = [args for keyword, args in final_stage() if keyword == "CMD"]
    assert cmds and cmds[-1] == '["broadcast", "--help"]'
    for keyword, args in dockerfile_instructions():
        if keyword in ("ENV", "ARG"):
            assert not SECRET_NAME.search(args), f"{keyword} {args}: secrets come at run time, not build time"


# --- the build context -------------------------------------------------------------------------------


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.removeprefix("!").strip().lstrip("/").rstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex)))
    return rules


def dockerignored(path: str) -> bool:
    """Whether `docker build` leaves ``path`` out of the context (last matching rule wins; a matched
    directory takes its contents with it)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negate, regex in _dockerignore_rules():
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_context_small_and_clean() -> None:
    for path in (".venv/bin/python", ".git/HEAD", "worker/__pycache__/x.pyc", ".pytest_cache/v", "tests/test_x.py"):
        assert dockerignored(path), f"{path} is sent to the docker build"
    for path in (".env", "deploy/accounts.toml"):
        assert dockerignored(path), f"{path} may hold secrets: keep it out of the image"


def test_dockerignore_keeps_what_the_build_needs() -> None:
    needed = ["pyproject.toml", "worker/settings.py", "scheduler/cli/app.py", "simulator/app.py"]
    for keyword, args in dockerfile_instructions():
        if keyword == "COPY" and "--from=" not in args:
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            needed += [s for s in sources if s != "."]
    for path in needed:
        assert (ROOT / path).exists(), f"{path} is missing"
        assert not dockerignored(path), f".dockerignore drops {path}, which the build needs"


# --- the ha profile (issue 21) -------------------------------------------------------------------------


def _conf(path: Path) -> list[list[str]]:
    return [shlex.split(line) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_ha_profile_is_a_replica_and_three_sentinels_nothing_depends_on() -> None:
    for name in HA_SERVICES:
        svc = service(name)
        assert svc.get("profiles") == ["ha"], f"{name}: only with --profile ha"
        assert str(svc["image"]).startswith("redis:7")
        assert depends_on(svc).get("redis", {}).get("condition") == "service_healthy"
        mounts = [v for v in svc.get("volumes") or [] if isinstance(v, dict)]
        assert {"source": "./deploy/ha", "target": "/etc/redis-ha", "read_only": True}.items() <= mounts[0].items()
        named = [v.split(":")[0] for v in svc.get("volumes") or [] if isinstance(v, str)]
        assert len(named) == 1 and named[0] in (compose().get("volumes") or {}), f"{name}: a volume of its own"
    for name, svc in services().items():
        if name not in HA_SERVICES:
            assert not depends_on(svc).keys() & HA_SERVICES, f"{name} depends on a profile-only service"
    sentinel_volumes = {str(service(n)["volumes"][1]) for n in HA_SERVICES if n.startswith("sentinel")}
    assert len(sentinel_volumes) == 3, "each Sentinel keeps its own learned configuration"


def test_ha_replica_follows_redis_with_the_same_durability() -> None:
    replica = service("redis-replica")
    assert command(replica) == ["redis-server", "/etc/redis-ha/replica.conf"]
    conf = {line[0]: line[1:] for line in _conf(HA_CONFIG / "replica.conf")}
    assert conf["replicaof"] == ["redis", "6379"] and conf["replica-announce-ip"] == ["redis-replica"]
    assert conf["appendonly"] == ["yes"] and conf["appendfsync"] == ["always"]
    assert conf["maxmemory-policy"] == ["noeviction"]
    primary = command(service("redis"))
    assert primary[primary.index("--replica-announce-ip") + 1] == "redis", "a demoted primary rejoins by name"


def test_ha_sentinels_watch_redis_with_a_quorum_of_two_and_keep_what_they_learn() -> None:
    lines = _conf(HA_CONFIG / "sentinel.conf")
    assert ["sentinel", "monitor", "broadcast", "redis", "6379", "2"] in lines
    assert ["sentinel", "resolve-hostnames", "yes"] in lines and ["sentinel", "announce-hostnames", "yes"] in lines
    down_after = next(int(line[3]) for line in lines if line[1] == "down-after-milliseconds")
    assert 1000 <= down_after <= 30_000
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        script = command(service(name))[-1]
        # the template is copied once: a restarted Sentinel keeps the primary it learned, not `redis`
        assert script.startswith("[ -f /data/sentinel.conf ] || cp /etc/redis-ha/sentinel.conf /data/sentinel.conf")
        assert script.endswith("--sentinel")
        assert "26379" in " ".join(service(name)["healthcheck"]["test"])


def test_ha_url_in_the_runbook_names_the_three_sentinels_and_the_master() -> None:
    from worker.runtime.connections import parse_redis_url

    text = COMPOSE_FILE.read_text(encoding="utf-8")
    url = re.search(r'BROADCAST_REDIS_URL="(sentinel://[^"]+)"', text)
    assert url, "the header shows the Sentinel URL for the ha profile"
    target = parse_redis_url(url.group(1))
    assert {host for host, _ in target.sentinels} == {"sentinel-1", "sentinel-2", "sentinel-3"}
    assert {port for _, port in target.sentinels} == {26379}
    assert "BROADCAST_REDIS_MASTER_NAME=broadcast" in text
    assert environment(service("worker"))["BROADCAST_REDIS_MASTER_NAME"] == "${BROADCAST_REDIS_MASTER_NAME:-}"
