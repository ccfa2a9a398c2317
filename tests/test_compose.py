"""docker-compose.yaml: the shape a region's deployment relies on, then compose's own check.

No Docker engine runs here: the file is read as YAML (anchors and merges resolved) and
validated offline by Debian's ``docker-compose config -q``, installed when missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from rpu.airflow.access import FAB_AUTH_MANAGER
from rpu.cli.connections import CONNECTION_IDS, read_env_file
from rpu.cli.region_init import CONTAINER_EXPORTS_DIR, CONTAINER_REGION_DIR, init_region
from rpu.flows import establishment_report, inbox

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}
CELERY_SERVICES = {"redis", "airflow-worker", "flower"}  # behind the profiles "celery" and "flower"
LONG_RUNNING = AIRFLOW_SERVICES | CELERY_SERVICES | {"postgres", "sftp"}
# Get the connections (the workers run the tasks under the CeleryExecutor).
TASK_RUNNERS = {"airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker"}
_INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(:?[-?][^}]*)?\}")  # not $${...}: the shell's


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _env(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    assert isinstance(environment, dict), "environment as a mapping, so anchors merge"
    return {k: str(v) for k, v in environment.items()}


# --------------------------------------------------------------------------- the shape


def test_the_services_of_one_region_and_celery_only_in_its_profiles(services):
    assert set(services) == LONG_RUNNING | {"airflow-init"}
    assert {name: services[name].get("profiles") for name in CELERY_SERVICES} == {
        "redis": ["celery"], "airflow-worker": ["celery"], "flower": ["flower"]}
    assert not any(services[name].get("profiles") for name in set(services) - CELERY_SERVICES)
    assert "ports" not in services["redis"]  # the broker stays on the compose network
    assert services["flower"]["ports"] == ["127.0.0.1:${FLOWER_PORT:-5555}:5555"]


def test_every_long_running_service_has_a_healthcheck_and_restarts(services):
    for name in LONG_RUNNING:
        healthcheck = services[name].get("healthcheck")
        assert healthcheck and healthcheck.get("test"), f"{name} sans healthcheck"
        assert healthcheck["test"][0] in ("CMD", "CMD-SHELL")
        assert services[name].get("restart") == "unless-stopped", name
    assert "healthcheck" not in services["airflow-init"]
    assert services["airflow-init"]["restart"] == "no"  # a one-shot job


def test_the_scheduler_is_unhealthy_when_the_concentrator_is_down(services):
    """Its healthcheck runs `rpu health` (where the connections and the region are) and fails on
    exit 2 (down) only: degraded is for the ORU to read, not a reason to flag the container."""
    [kind, command] = services["airflow-scheduler"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and "rpu health" in command and "-lt 2" in command
    environment = _env(services["airflow-scheduler"])
    assert {"RPU_DATABASE_URL", "RPU_REGION_CONFIG"} <= set(environment)


def test_airflow_runs_with_the_local_executor_and_reaches_its_execution_api(services):
    for name in AIRFLOW_SERVICES | {"airflow-init", "airflow-worker", "flower"}:
        env = _env(services[name])
        # LocalExecutor unless the region's .env asks for Celery; then Redis and PostgreSQL.
        assert env["AIRFLOW__CORE__EXECUTOR"] == "${AIRFLOW_EXECUTOR:-LocalExecutor}", name
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0", name
        assert re.fullmatch(r"db\+postgresql\+psycopg2://airflow:\$\{AIRFLOW_DB_PASSWORD:\?[^}]+\}@postgres:5432/airflow",
                            env["AIRFLOW__CELERY__RESULT_BACKEND"]), name
        assert env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER, name  # DAG-level rights (rpu.airflow.access)
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/", name
        assert re.fullmatch(r"postgresql\+psycopg2://airflow:\$\{AIRFLOW_DB_PASSWORD:\?[^}]+\}@postgres:5432/airflow",
                            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]), name
        assert services[name]["image"] == services["airflow-apiserver"]["image"]  # one image, built from Dockerfile
        assert services[name]["build"]["dockerfile"] == "Dockerfile"
    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES | {"airflow-worker", "flower"}}
    assert commands == {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                        "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer",
                        "airflow-worker": "celery worker", "flower": "celery flower"}
    assert services["airflow-worker"]["deploy"]["replicas"] == "${AIRFLOW_WORKERS:-2}"
    init_script = "\n".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in init_script and "rpu db migrate" in init_script
    # The pool of the per-establishment loads, sized from .env (default: the cores).
    assert 'airflow pools set rpu_db "$${RPU_DB_POOL_SLOTS:-$$(nproc)}"' in init_script
    assert "airflow users create --username admin --role Admin" in init_script
    assert '--password "$${AIRFLOW_ADMIN_PASSWORD}"' in init_script


def test_start_order_follows_health(services):
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on with conditions, not a bare list"
        for target, rule in depends_on.items():
            condition = rule["condition"]
            assert condition in ("service_healthy", "service_completed_successfully"), (name, target)
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}, which has no healthcheck"
    for name in AIRFLOW_SERVICES | {"airflow-worker", "flower"}:
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-init"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["airflow-scheduler"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    for name in ("airflow-worker", "flower"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


def test_secrets_come_only_from_the_env_file(compose, services):
    text = "\n".join(line for line in COMPOSE_FILE.read_text(encoding="utf-8").splitlines()
                     if not line.lstrip().startswith("#"))
    referenced = set(_INTERPOLATION.findall(text))
    example = read_env_file(ENV_EXAMPLE)
    missing = {name for name, _ in referenced} - set(example)
    assert not missing, f".env.example does not define {missing}"
    secret_name = re.compile(r"PASSWORD|SECRET|FERNET|HOST_KEY|AIRFLOW_CONN_|SQL_ALCHEMY_CONN|DATABASE_URL")
    for name, service in services.items():
        assert "env_file" not in service, f"{name}: variables one by one, each service only what it needs"
        for key, value in _env(service).items():
            if secret_name.search(key) and not key.endswith("_FILE"):
                # Required substitution: compose refuses to start without it.
                assert re.search(r"\$\{[A-Z0-9_]+:\?", value), f"{name}.{key} = {value!r} is not taken from .env"
    # Each connection comes from the variable of the same name, only where tasks run.
    for name in TASK_RUNNERS:
        env = _env(services[name])
        for conn_id in CONNECTION_IDS:
            variable = f"AIRFLOW_CONN_{conn_id.upper()}"
            assert env[variable].startswith(f"${{{variable}:?"), (name, variable)
    for name in ("airflow-apiserver", "postgres", "sftp", "airflow-init", "redis", "flower"):
        assert not any(key.startswith("AIRFLOW_CONN_") for key in _env(services[name])), name
    # The Airflow keys shared by every component.
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        for key, variable in (("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW_FERNET_KEY"),
                              ("AIRFLOW__API__SECRET_KEY", "AIRFLOW_API_SECRET_KEY"),
                              ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW_JWT_SECRET")):
            assert env[key].startswith(f"${{{variable}:?"), (name, key)


def test_region_config_read_only_and_exports_on_a_volume(compose, services):
    for name in TASK_RUNNERS:
        volumes = services[name]["volumes"]
        # Read-only everywhere but in the scheduler, where `rpu establishments promote` runs.
        mode = "" if name == "airflow-scheduler" else ":ro"
        assert any(v.endswith(f":{CONTAINER_REGION_DIR}{mode}") and v.startswith("${RPU_REGION_DIR:?") for v in volumes)
        assert f"exports:{CONTAINER_EXPORTS_DIR}" in volumes
        assert _env(services[name])["RPU_REGION_CONFIG"] == f"{CONTAINER_REGION_DIR}/region.toml"
    assert set(compose["volumes"]) == {"postgres-data", "sftp-data", "exports", "airflow-logs"}
    # The API server, exposed to people, sees neither the region's files nor the exports.
    assert not any("/opt/rpu" in v for v in services["airflow-apiserver"]["volumes"])


def test_postgres_creates_the_regional_database_and_sftp_mounts_the_region_accounts(services):
    postgres = services["postgres"]
    assert "./deploy/postgres/init.sql:/docker-entrypoint-initdb.d/10-rpu.sql:ro" in postgres["volumes"]
    init_sql = (REPO / "deploy" / "postgres" / "init.sql").read_text(encoding="utf-8")
    for statement in ("CREATE ROLE rpu LOGIN PASSWORD :'rpu_password'", "CREATE DATABASE rpu OWNER rpu",
                      "CREATE ROLE airflow LOGIN PASSWORD :'airflow_password'", "CREATE DATABASE airflow OWNER airflow"):
        assert statement in init_sql
    assert "\\getenv rpu_password RPU_DB_PASSWORD" in init_sql
    sftp = services["sftp"]
    assert sftp["build"]["context"] == "./deploy/sftp"
    assert any(v.endswith("/sftp:/etc/rpu-sftp:ro") for v in sftp["volumes"]) and "sftp-data:/srv/sftp" in sftp["volumes"]
    assert (REPO / "deploy" / "sftp" / "entrypoint.sh").stat().st_mode & 0o111


def test_the_sftp_image_makes_every_folder_the_concentrator_writes_to():
    """The chroot of an establishment is root's: the concentrator (one shared uid) cannot create a
    folder there later, so the image makes each one the flows move files into."""
    script = (REPO / "deploy" / "sftp" / "entrypoint.sh").read_text(encoding="utf-8")
    made = set(re.search(r"for folder in ([a-z ]+); do", script).group(1).split())
    assert {inbox.DEPOT, inbox.PROCESSED, inbox.REJECTED, inbox.HELD, establishment_report.FOLDER} <= made


def test_dockerfile_builds_on_the_pinned_airflow(services):
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert "ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11" in dockerfile
    assert "apache-airflow==3.3.2" in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
    for source in ("requirements.txt", "pyproject.toml", "setup.py", "include/", "plugins/", "dags/"):
        assert re.search(rf"^COPY .*\b{re.escape(source)} ", dockerfile, re.MULTILINE), source
    assert "pip install --no-cache-dir --no-deps -e /opt/airflow" in dockerfile
    # The compiled reader and COPY rows are built in the image, and the build checks that they are used.
    assert "gcc" in dockerfile and "assert COMPILED_READER" in dockerfile and "assert COMPILED_ROWS" in dockerfile


def test_the_production_image_has_no_test_tools():
    """The image installs the run-time lock only; the test, lint, demo and docs tools are in the
    dev lock, and both locks agree on every package they share (they install together)."""
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert "requirements-dev" not in dockerfile
    pins = {name: _pins(name) for name in ("requirements.txt", "requirements-dev.txt")}
    for tool in ("pytest", "pytest-timeout", "ruff", "hypothesis", "playwright", "mkdocs", "mkdocs-material",
                 "pgserver", "aiosmtpd"):
        assert tool not in pins["requirements.txt"], f"{tool} would be in the production image"
        assert tool in pins["requirements-dev.txt"], tool
    shared = pins["requirements.txt"].keys() & pins["requirements-dev.txt"].keys()
    assert all(pins["requirements.txt"][name] == pins["requirements-dev.txt"][name] for name in shared)
    for name in ("apache-airflow", "apache-airflow-providers-postgres", "lxml", "pandas", "matplotlib", "psycopg"):
        assert name in pins["requirements.txt"], name


def _pins(lock: str) -> dict[str, str]:
    lines = (REPO / lock).read_text(encoding="utf-8").splitlines()
    return dict(re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^]]*\])?==(\S+)", line).groups() for line in lines
                if line and not line.startswith((" ", "#")))


# --------------------------------------------------------------------------- docker-compose config


@pytest.fixture(scope="session")
def docker_compose() -> str:
    """Debian's docker-compose (v1): validates a file offline. Installed when missing."""
    found = shutil.which("docker-compose")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("docker-compose absent, and installing it needs root and apt-get "
                    "(apt-get install docker-compose): compose validation not run")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "docker-compose"]
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:  # a fresh machine has no package lists yet
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env, timeout=600)
        result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    found = shutil.which("docker-compose")
    if not found:
        pytest.fail(f"apt-get install docker-compose failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return found


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of what compose reads (the file and its build contexts), as a region's machine has it."""
    for name in ("docker-compose.yaml", "Dockerfile", ".dockerignore"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "deploy", tmp_path / "deploy")
    return tmp_path


def _compose(docker_compose: str, project: Path, *args: str) -> subprocess.CompletedProcess:
    # Variables of the calling shell win over the .env file: none of ours may leak in.
    ours = set(read_env_file(ENV_EXAMPLE))
    env = {k: v for k, v in os.environ.items() if k not in ours and not k.startswith(("COMPOSE_", "DOCKER_"))}
    return subprocess.run([docker_compose, "-f", "docker-compose.yaml", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)


def test_compose_config_is_valid_with_the_example_env(docker_compose, project):
    shutil.copy(ENV_EXAMPLE, project / ".env")
    result = _compose(docker_compose, project, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_config_is_valid_with_a_region_made_by_rpu_region_init(docker_compose, project, monkeypatch):
    monkeypatch.chdir(project)
    target, _ = init_region("test", "Région de test", project / "regions")
    result = _compose(docker_compose, project, "--env-file", str(target / ".env"), "config")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    scheduler = resolved["services"]["airflow-scheduler"]
    env = read_env_file(target / ".env")
    assert scheduler["environment"]["AIRFLOW_CONN_RPU_DB"] == env["AIRFLOW_CONN_RPU_DB"]
    assert scheduler["environment"]["AIRFLOW__CORE__FERNET_KEY"] == env["AIRFLOW_FERNET_KEY"]
    assert f"{target}:{CONTAINER_REGION_DIR}:rw" in scheduler["volumes"]
    triggerer = resolved["services"]["airflow-triggerer"]
    assert f"{target}:{CONTAINER_REGION_DIR}:ro" in triggerer["volumes"]
    assert resolved["services"]["sftp"]["environment"]["SFTP_HOST_KEY"] == env["SFTP_HOST_KEY"]


def test_compose_refuses_to_start_without_a_secret(docker_compose, project):
    example = ENV_EXAMPLE.read_text(encoding="utf-8")
    (project / ".env").write_text("\n".join(line for line in example.splitlines()
                                            if not line.startswith("AIRFLOW_JWT_SECRET=")) + "\n")
    result = _compose(docker_compose, project, "config", "-q")
    assert result.returncode != 0
    assert "AIRFLOW_JWT_SECRET manquant dans .env" in result.stderr


@pytest.mark.parametrize(("who", "chroot", "start"), [
    ("user=e670780691,host=h,addr=10.0.0.1", "%h", "/depot"),
    ("user=rpu,host=h,addr=10.0.0.1", "/srv/sftp", "/"),
])
def test_deployed_sftp_accounts_are_chrooted_and_cannot_create_links(tmp_path, openssh_sshd, who, chroot, start):
    """The effective configuration OpenSSH computes for each kind of account (sshd -T). The group
    of the establishments' accounts only exists in the container: its block is matched by name."""
    config = (REPO / "deploy" / "sftp" / "sshd_config").read_text()
    assert "Match Group etablissements" in config
    config = config.replace("Match Group etablissements", "Match User e*")
    host_key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    config = config.replace("/etc/ssh/ssh_host_ed25519_key", str(host_key))
    (tmp_path / "sshd_config").write_text(config)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation directory
    result = subprocess.run([openssh_sshd, "-T", "-f", str(tmp_path / "sshd_config"), "-C", who],
                            capture_output=True, text=True, check=True)
    effective = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert effective["chrootdirectory"] == chroot
    assert effective["forcecommand"] == f"internal-sftp -d {start} -P symlink,hardlink"
    assert effective["allowtcpforwarding"] == "no" and effective["permittty"] == "no"
