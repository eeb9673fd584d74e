"""Lambda-compatibility suite: unmodified boto3 and the AWS CLI against a real `nimbus serve`.

One server per session: `$NIMBUS_BIN` (the Rust bridge tests/e2e/python.rs sets it) or
`target/debug/nimbus` under the repository root, on a free loopback port with a temporary
data dir. Tests create functions with unique names, so they do not depend on each other.

`NIMBUS_TEST_BACKEND=postgres` (as for the Rust e2e tests, tests/support) puts every server's
stores in PostgreSQL (`NIMBUS_TEST_PG`, default postgres://postgres@127.0.0.1:5432/test): a
schema of its own per server (`--database …?options=-csearch_path%3DSCHEMA`), made with psycopg
and dropped when the server object goes.

Run: python3 -m pip install -r tests/python/requirements.txt && python3 -m pytest tests/python -q
"""

import base64
import configparser
import hashlib
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
import weakref
import zipfile
from pathlib import Path

try:
    import boto3
    import botocore
    from botocore.config import Config
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError(
        f"{e}: the Lambda-compatibility suite needs boto3: "
        "run `python3 -m pip install -r tests/python/requirements.txt`"
    ) from e

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "000000000000"
ROLE = "arn:aws:iam::123456789012:role/nimbus-test"
ACCESS_KEY = "AKIDNIMBUSTEST000000"
SECRET_KEY = "nimbus-test-secret-key"

# Keep the developer's own AWS configuration (profiles, endpoints, retry settings) out of the
# clients and the CLI subprocesses.
for _var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LAMBDA",
             "AWS_SESSION_TOKEN", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_CA_BUNDLE"):
    os.environ.pop(_var, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
os.environ["AWS_DEFAULT_REGION"] = REGION
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

def nimbus_bin() -> Path:
    env = os.environ.get("NIMBUS_BIN")
    path = Path(env) if env else REPO_ROOT / "target" / "debug" / "nimbus"
    if not path.exists():
        raise RuntimeError(
            f"{path} not found: build it with `cargo build -p nimbus-cli` (or set NIMBUS_BIN)"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_is_postgres() -> bool:
    """`NIMBUS_TEST_BACKEND=postgres`: the servers keep their stores in PostgreSQL."""
    backend = os.environ.get("NIMBUS_TEST_BACKEND", "")
    if backend in ("", "sqlite"):
        return False
    if backend == "postgres":
        return True
    raise RuntimeError(f"NIMBUS_TEST_BACKEND={backend!r}: expected sqlite or postgres")


def _pg_execute(url: str, sql: str):
    import psycopg  # tests/python/requirements.txt; only needed on PostgreSQL
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as c:
            c.execute(sql)
    except psycopg.OperationalError as e:
        raise RuntimeError(
            f"{e}: the PostgreSQL tests need a PostgreSQL server (start one, trust auth and "
            "database `test` as CI's .ci/run has, or point NIMBUS_TEST_PG at one)") from e


class PgSchema:
    """A schema of its own in the tests' PostgreSQL, as tests/support's TestDb makes (random
    name, `search_path` set to it by the URL's options); dropped by `drop()`."""

    def __init__(self, prefix: str = "py"):
        base = os.environ.get("NIMBUS_TEST_PG") or "postgres://postgres@127.0.0.1:5432/test"
        self.base = base
        self.name = f"t_{prefix}_{secrets.token_hex(8)}"
        _pg_execute(base, f"CREATE SCHEMA {self.name}")
        sep = "&" if "?" in base else "?"
        self.url = f"{base}{sep}options=-csearch_path%3D{self.name}"

    def drop(self):
        _pg_execute(self.base, f"DROP SCHEMA IF EXISTS {self.name} CASCADE")


def database_args(owner) -> list:
    """`--database URL` with a fresh schema (dropped when `owner` is collected or at exit)
    and `--nats` under NIMBUS_TEST_BACKEND=postgres; nothing on SQLite."""
    if not backend_is_postgres():
        return []
    schema = PgSchema()
    weakref.finalize(owner, schema.drop)
    # As a cluster node: the stores in PostgreSQL, change notices on the local NATS.
    return ["--database", schema.url, "--nats",
            os.environ.get("NIMBUS_TEST_NATS") or "nats://127.0.0.1:4222"]


class NimbusServer:
    """A `nimbus serve` child process with its own port, data dir and log file (and, under
    NIMBUS_TEST_BACKEND=postgres, its own schema, kept across restarts)."""

    def __init__(self, binary: Path, workdir: Path, auth: bool = False, extra_args=()):
        self.auth = auth
        self.extra_args = list(extra_args)
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        self.proc = None
        self.database_args = database_args(self)

    def start(self):
        log = open(self.log_path, "ab")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", str(self.workdir / "data"), "--auth", "on" if self.auth else "off",
             *self.database_args, *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"nimbus exited with {self.proc.returncode} during start:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.base_url + "/v1/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nimbus did not become healthy in 30 s:\n{self.log()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def admin_key(self):
        """The bootstrap admin key of an `--auth on` server: (id, secret)."""
        creds = configparser.ConfigParser()
        creds.read(self.workdir / "data" / "credentials")
        return creds["default"]["aws_access_key_id"], creds["default"]["aws_secret_access_key"]

    def create_key(self, name, policy):
        """`nimbus keys create` with the admin key; returns (id, secret)."""
        env = dict(os.environ, NIMBUS_CREDENTIALS_FILE=str(self.workdir / "data" / "credentials"))
        # The suite's dummy AWS_* keys would win over the credentials file.
        env.pop("AWS_ACCESS_KEY_ID", None)
        env.pop("AWS_SECRET_ACCESS_KEY", None)
        out = subprocess.run(
            [str(self.binary), "--endpoint", self.base_url, "--json", "keys", "create",
             "--name", name, "--policy", json.dumps(policy)],
            capture_output=True, text=True, env=env, timeout=30)
        assert out.returncode == 0, out.stderr
        key = json.loads(out.stdout)
        return key["AccessKeyId"], key["SecretAccessKey"]

    def log(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0


_SERVER = None


@pytest.fixture(scope="session")
def nimbus(tmp_path_factory):
    """The running server (session-wide)."""
    global _SERVER
    try:
        srv = NimbusServer(nimbus_bin(), tmp_path_factory.mktemp("nimbus"))
        srv.start()
    except RuntimeError as e:
        # Every test needs the server: stop the session with one clear message.
        pytest.exit(f"cannot start the nimbus server: {e}", returncode=3)
    _SERVER = srv
    try:
        yield srv
    finally:
        _SERVER = None
        srv.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the server log lines written during a failing test to its report."""
    outcome = yield
    report = outcome.get_result()
    start = getattr(item, "_nimbus_log_start", None)
    if report.failed and _SERVER is not None and start is not None:
        text = _SERVER.log(start)
        if len(text) > 8000:
            text = "…\n" + text[-8000:]
        report.sections.append(("nimbus server log (during this test)", text))


@pytest.fixture(autouse=True)
def _mark_log_position(request):
    if _SERVER is not None:
        request.node._nimbus_log_start = _SERVER.log_size()
    yield


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------

def make_client(endpoint_url: str, validate: bool = True, access_key: str = ACCESS_KEY,
                secret_key: str = SECRET_KEY):
    """A boto3 Lambda client for Nimbus: dummy credentials (or the given key), us-east-1,
    no retries."""
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=REGION)
    return session.client(
        "lambda",
        endpoint_url=endpoint_url,
        config=Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            parameter_validation=validate,
        ),
    )


@pytest.fixture(scope="session")
def lambda_client(nimbus):
    """boto3 exactly as a user has it (botocore's client-side checks on)."""
    return make_client(nimbus.base_url)


@pytest.fixture(scope="session")
def raw_client(nimbus):
    """boto3 with client-side parameter validation off, so values below a model `min`
    (MemorySize 64, Timeout 0) reach the server, whose own checks are what we test."""
    return make_client(nimbus.base_url, validate=False)


# --------------------------------------------------------------------------------------------
# Code packages
# --------------------------------------------------------------------------------------------

def zip_bytes(files: dict) -> bytes:
    """A zip of {path: text}; files named `bootstrap` are executable."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, text in files.items():
            info = zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            mode = 0o755 if path.endswith("bootstrap") else 0o644
            info.external_attr = (0o100000 | mode) << 16
            z.writestr(info, text)
    return buf.getvalue()


def python_handler(tag: str = "v1") -> str:
    """Source of `app.handler`: returns the tag, the event, what the context says and the
    environment variables starting with T_; raises when the event asks it to."""
    return f'''import os

TAG = {tag!r}


def handler(event, context):
    print("handler-log-line tag=" + TAG)
    if isinstance(event, dict) and event.get("fail"):
        raise ValueError("asked to fail: " + str(event["fail"]))
    return {{
        "tag": TAG,
        "event": event,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_arn": context.invoked_function_arn,
        "env": {{k: v for k, v in os.environ.items() if k.startswith("T_")}},
    }}
'''


def python_zip(tag: str = "v1", source: str = None) -> bytes:
    return zip_bytes({"app.py": source if source is not None else python_handler(tag)})


def node_zip(tag: str = "node-v1") -> bytes:
    src = f'''exports.handler = async (event, context) => {{
  console.log("node-handler-log-line");
  return {{ tag: {json.dumps(tag)}, event, functionName: context.functionName }};
}};
'''
    return zip_bytes({"index.js": src})


def code_sha256(zip_data: bytes) -> str:
    """Lambda's CodeSha256: base64 of the SHA-256 of the zip."""
    return base64.b64encode(hashlib.sha256(zip_data).digest()).decode()


def native(server, method: str, path: str, body=None):
    """A request to Nimbus's native `/v1` API of an `--auth off` server; the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.base_url + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
        return json.loads(text) if text else None


def queue_arn(name: str) -> str:
    """The SQS-style ARN of a built-in queue."""
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def invoke_json(client, **kwargs):
    """Invoke and return (response, decoded JSON payload)."""
    if "Payload" in kwargs and not isinstance(kwargs["Payload"], (bytes, str)):
        kwargs["Payload"] = json.dumps(kwargs["Payload"])
    resp = client.invoke(**kwargs)
    body = resp["Payload"].read()
    return resp, (json.loads(body) if body else None)


def error_code(exc) -> str:
    return exc.response["Error"]["Code"]


def http_status(resp_or_exc) -> int:
    meta = resp_or_exc.response if hasattr(resp_or_exc, "response") else resp_or_exc
    return meta["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def make_function(lambda_client):
    """Factory: create_function with sensible defaults (Python 3.11 `app.handler`); deletes the
    functions it made when the test ends (best effort)."""
    made = []

    def create(name=None, zip_data=None, runtime="python3.11", handler="app.handler", **kwargs):
        name = name or unique_name()
        resp = lambda_client.create_function(
            FunctionName=name,
            Runtime=runtime,
            Role=ROLE,
            Handler=handler,
            Code={"ZipFile": zip_data if zip_data is not None else python_zip()},
            **kwargs,
        )
        made.append(name)
        return resp

    yield create
    for name in made:
        try:
            lambda_client.delete_function(FunctionName=name)
        except botocore.exceptions.ClientError:
            pass


def aws_cli() -> str:
    path = shutil.which("aws")
    if not path:
        raise RuntimeError(
            "the AWS CLI (`aws`) is not installed: "
            "run `python3 -m pip install -r tests/python/requirements.txt`")
    return path
