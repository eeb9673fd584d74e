"""Execution roles: the IAM API with unmodified boto3, and functions that use their role's
temporary credentials with unmodified `boto3.client("s3")` / `boto3.client("sqs")` at their
private endpoint (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`).

One server with `--auth on` and an S3 listener for the module (the bootstrap admin key
signs the test's own requests). Functions get boto3 vendored into their package from the
test venv (botocore's data pruned to the services used), as a Lambda user would ship a
pinned boto3. Run through tests/e2e/roles.rs, or by hand:
`cargo build -p nimbus-cli && python3 -m pytest tests/python/test_iam.py -q`.
"""

import base64
import io
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import boto3
import botocore
import botocore.exceptions
import pytest
from botocore.config import Config

from conftest import ACCOUNT, REGION, NimbusServer, free_port, nimbus_bin

POLICY_VERSION = "2012-10-17"
TRUST = {
    "Version": POLICY_VERSION,
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}


class RolesNimbus(NimbusServer):
    """`--auth on` with an S3 listener on its own free port."""

    def __init__(self, workdir):
        self.s3_port = free_port()
        super().__init__(nimbus_bin(), workdir, auth=True,
                         extra_args=["--s3-listen", f"127.0.0.1:{self.s3_port}"])
        self.s3_url = f"http://127.0.0.1:{self.s3_port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = RolesNimbus(tmp_path_factory.mktemp("nimbus-roles"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def client(service, url, key_id, secret, token=None):
    session = boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret,
                                    aws_session_token=token, region_name=REGION)
    return session.client(service, endpoint_url=url, config=Config(
        retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=90,
        signature_version="s3v4" if service == "s3" else None))


@pytest.fixture(scope="module")
def iam(server):
    return client("iam", server.base_url, *server.admin_key())


@pytest.fixture(scope="module")
def lam(server):
    return client("lambda", server.base_url, *server.admin_key())


@pytest.fixture(scope="module")
def s3(server):
    return client("s3", server.s3_url, *server.admin_key())


@pytest.fixture(scope="module")
def sqs(server):
    return client("sqs", server.base_url, *server.admin_key())


def code(exc):
    return exc.value.response["Error"]["Code"]


def status(exc):
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def role_arn(name, path="/"):
    return f"arn:aws:iam::{ACCOUNT}:role{path}{name}"


# --------------------------------------------------------------------------------------------
# The IAM API
# --------------------------------------------------------------------------------------------

def test_role_lifecycle(iam):
    name = uniq("r")
    created = iam.create_role(
        RoleName=name, Path="/app/", AssumeRolePolicyDocument=json.dumps(TRUST),
        Description="thumbnails", MaxSessionDuration=7200,
        Tags=[{"Key": "team", "Value": "media"}])["Role"]
    assert created["RoleName"] == name
    assert created["Path"] == "/app/"
    assert created["Arn"] == role_arn(name, "/app/")
    assert created["RoleId"].startswith("AROA") and len(created["RoleId"]) == 21
    # botocore decodes the URL-encoded document IAM returns.
    assert created["AssumeRolePolicyDocument"] == TRUST
    assert created["MaxSessionDuration"] == 7200
    assert created["Tags"] == [{"Key": "team", "Value": "media"}]
    got = iam.get_role(RoleName=name)["Role"]
    assert got["RoleId"] == created["RoleId"]
    assert got["Description"] == "thumbnails"
    assert got["CreateDate"].year >= 2024

    iam.update_role(RoleName=name, Description="thumbs v2", MaxSessionDuration=3600)
    got = iam.get_role(RoleName=name)["Role"]
    assert (got["Description"], got["MaxSessionDuration"]) == ("thumbs v2", 3600)

    doc = {"Version": POLICY_VERSION, "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::b/in/*"}]}
    iam.put_role_policy(RoleName=name, PolicyName="read", PolicyDocument=json.dumps(doc))
    iam.put_role_policy(RoleName=name, PolicyName="also", PolicyDocument=json.dumps(doc))
    p = iam.get_role_policy(RoleName=name, PolicyName="read")
    assert (p["RoleName"], p["PolicyName"], p["PolicyDocument"]) == (name, "read", doc)
    assert iam.list_role_policies(RoleName=name)["PolicyNames"] == ["also", "read"]
    page = iam.list_role_policies(RoleName=name, MaxItems=1)
    assert page["PolicyNames"] == ["also"] and page["IsTruncated"]
    assert iam.list_role_policies(RoleName=name, Marker=page["Marker"])["PolicyNames"] == ["read"]

    iam.tag_role(RoleName=name, Tags=[{"Key": "env", "Value": "dev"}])
    iam.untag_role(RoleName=name, TagKeys=["team"])
    assert iam.list_role_tags(RoleName=name)["Tags"] == [{"Key": "env", "Value": "dev"}]

    # As IAM: a role with inline policies cannot be deleted.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.delete_role(RoleName=name)
    assert (code(e), status(e)) == ("DeleteConflict", 409)
    iam.delete_role_policy(RoleName=name, PolicyName="read")
    iam.delete_role_policy(RoleName=name, PolicyName="also")
    iam.delete_role(RoleName=name)
    with pytest.raises(iam.exceptions.NoSuchEntityException) as e:
        iam.get_role(RoleName=name)
    assert (code(e), status(e)) == ("NoSuchEntity", 404)


def test_list_roles_by_path_with_pagination(iam):
    path = f"/{uniq('p')}/"
    names = sorted(uniq("l") for _ in range(3))
    for n in names:
        iam.create_role(RoleName=n, Path=path, AssumeRolePolicyDocument=json.dumps(TRUST))
    first = iam.list_roles(PathPrefix=path, MaxItems=2)
    assert [r["RoleName"] for r in first["Roles"]] == names[:2]
    assert first["IsTruncated"]
    rest = iam.list_roles(PathPrefix=path, Marker=first["Marker"])
    assert [r["RoleName"] for r in rest["Roles"]] == names[2:]
    assert not rest["IsTruncated"]
    # The paginator follows the markers.
    pages = iam.get_paginator("list_roles").paginate(PathPrefix=path, PaginationConfig={"PageSize": 1})
    assert [r["RoleName"] for p in pages for r in p["Roles"]] == names


def test_iam_errors(iam):
    name = uniq("e")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))
    with pytest.raises(iam.exceptions.EntityAlreadyExistsException) as e:
        # Role names are unique whatever their case, as in IAM.
        iam.create_role(RoleName=name.upper(), AssumeRolePolicyDocument=json.dumps(TRUST))
    assert status(e) == 409
    with pytest.raises(iam.exceptions.MalformedPolicyDocumentException) as e:
        iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument="{not json")
    assert status(e) == 400
    # A policy Nimbus cannot evaluate (a Condition) is refused, not half-applied.
    cond = {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*",
                           "Condition": {"Bool": {"aws:SecureTransport": "true"}}}]}
    with pytest.raises(iam.exceptions.MalformedPolicyDocumentException):
        iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=json.dumps(cond))
    with pytest.raises(iam.exceptions.MalformedPolicyDocumentException):
        iam.create_role(RoleName=uniq("m"), AssumeRolePolicyDocument="[1, 2]")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_role(RoleName=uniq("m"), AssumeRolePolicyDocument=json.dumps(TRUST),
                        MaxSessionDuration=43201)
    assert (code(e), status(e)) == ("ValidationError", 400)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        iam.create_role(RoleName="bad name", AssumeRolePolicyDocument=json.dumps(TRUST))
    assert code(e) == "ValidationError"
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role_policy(RoleName=name, PolicyName="nope")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.delete_role_policy(RoleName=name, PolicyName="nope")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.put_role_policy(RoleName=uniq("gone"), PolicyName="p", PolicyDocument=json.dumps(
            {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.delete_role(RoleName=uniq("gone"))


def test_iam_calls_are_authorised_per_role(server):
    allowed = uniq("team-a")
    key = server.create_key(uniq("k"), {"Statement": [
        {"Effect": "Allow", "Action": "iam:*", "Resource": f"arn:aws:iam::{ACCOUNT}:role/team-a-*"}]})
    limited = client("iam", server.base_url, *key)
    limited.create_role(RoleName=allowed, AssumeRolePolicyDocument=json.dumps(TRUST))
    assert limited.get_role(RoleName=allowed)["Role"]["RoleName"] == allowed
    with pytest.raises(botocore.exceptions.ClientError) as e:
        limited.create_role(RoleName=uniq("team-b"), AssumeRolePolicyDocument=json.dumps(TRUST))
    assert (code(e), status(e)) == ("AccessDenied", 403)
    # IAM's error shape for a key the server does not know.
    stranger = client("iam", server.base_url, "AKIAUNKNOWNUNKNOWN00", "x" * 40)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        stranger.get_role(RoleName=allowed)
    assert (code(e), status(e)) == ("InvalidClientTokenId", 403)


def test_eventbridge_calls_are_authorised_as_on_aws(server):
    """EventBridge's API needs `events:OP` on the bus each entry goes to, or on the rule or
    bus the call names; an entry naming another bus is refused, not put on it."""
    admin = client("events", server.base_url, *server.admin_key())
    other = uniq("bus")
    admin.create_event_bus(Name=other)
    key = server.create_key(uniq("k"), {"Statement": [
        {"Effect": "Allow", "Action": "events:PutEvents",
         "Resource": f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"},
        {"Effect": "Allow", "Action": ["events:PutRule", "events:DescribeRule"],
         "Resource": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{other}/team-*"}]})
    events = client("events", server.base_url, *key)
    entry = {"Source": "shop", "DetailType": "t", "Detail": "{}"}
    assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0
    for entries in ([dict(entry, EventBusName=other)], [entry, dict(entry, EventBusName=other)]):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            events.put_events(Entries=entries)
        assert status(e) == 403, e.value.response
        assert f"event-bus/{other}" in e.value.response["Error"]["Message"]
    pattern = json.dumps({"source": ["shop"]})
    events.put_rule(Name="team-x", EventBusName=other, EventPattern=pattern)
    assert events.describe_rule(Name="team-x", EventBusName=other)["Name"] == "team-x"
    for name, bus in (("other-x", other), ("team-x", "default")):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            events.put_rule(Name=name, EventBusName=bus, EventPattern=pattern)
        assert "events:PutRule" in e.value.response["Error"]["Message"], e.value.response
    # The native API's names do not open EventBridge's API.
    native = server.create_key(uniq("k"), {"Statement": [
        {"Effect": "Allow", "Action": "nimbus:PutEvents", "Resource": "*"}]})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client("events", server.base_url, *native).put_events(Entries=[entry])
    assert "events:PutEvents" in e.value.response["Error"]["Message"]


# --------------------------------------------------------------------------------------------
# Functions with roles
# --------------------------------------------------------------------------------------------

HANDLER = r'''
import json, os, socket


def _error(e):
    import botocore.exceptions as be
    if isinstance(e, be.ClientError):
        return {"error": e.response["Error"]["Code"],
                "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}
    return {"error": type(e).__name__, "message": str(e)}


def handler(event, context):
    op = event["op"]
    if op == "env":
        if os.environ.get("AWS_SESSION_TOKEN"):
            # Lines that show credentials are masked before they are stored.
            print("secret=" + os.environ["AWS_SECRET_ACCESS_KEY"])
            print("token=" + os.environ["AWS_SESSION_TOKEN"])
        names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION")
        return {k: os.environ.get(k) for k in names}
    if op == "connect":
        out = {}
        for host, port in event["targets"]:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(2)
            try:
                s.connect((host, port))
                out[f"{host}:{port}"] = "open"
            except OSError as e:
                out[f"{host}:{port}"] = type(e).__name__
            finally:
                s.close()
        return out
    try:
        import boto3
        if op == "s3_get":
            r = boto3.client("s3").get_object(Bucket=event["bucket"], Key=event["key"])
            return {"body": r["Body"].read().decode()}
        if op == "s3_put":
            boto3.client("s3").put_object(Bucket=event["bucket"], Key=event["key"],
                                          Body=event["body"].encode())
            return {"ok": True}
        if op == "s3_copy":
            s3 = boto3.client("s3")
            body = s3.get_object(Bucket=event["bucket"], Key=event["src"])["Body"].read()
            s3.put_object(Bucket=event["bucket"], Key=event["dst"], Body=body.upper())
            return {"ok": True}
        if op == "s3_list_buckets":
            boto3.client("s3").list_buckets()
            return {"ok": True}
        if op == "sqs_send":
            sqs = boto3.client("sqs")
            url = sqs.get_queue_url(QueueName=event["queue"])["QueueUrl"]
            sqs.send_message(QueueUrl=url, MessageBody=event.get("body", "hi"))
            return {"ok": True, "url": url}
        if op == "sqs_as":
            sqs = boto3.client("sqs", aws_access_key_id=event["id"],
                               aws_secret_access_key=event["secret"])
            sqs.list_queues()
            return {"ok": True}
    except Exception as e:  # the test looks at what boto3 raised
        return _error(e)
    return {"error": "unknown op " + op}
'''


def vendored_boto3() -> dict:
    """{path in the zip: bytes} of boto3 and its dependencies from this interpreter's
    site-packages, botocore's data limited to what the functions call."""
    import boto3 as b3
    import dateutil
    import jmespath
    import s3transfer
    import six
    import urllib3
    keep_data = {"s3", "sqs", "iam", "sts"}
    files = {}
    for mod in (b3, botocore, s3transfer, jmespath, dateutil, urllib3):
        root = Path(mod.__file__).parent
        for p in root.rglob("*"):
            if not p.is_file() or "__pycache__" in p.parts:
                continue
            rel = p.relative_to(root.parent)
            parts = rel.parts
            if parts[0] == "botocore" and len(parts) > 3 and parts[1] == "data" \
                    and parts[2] not in keep_data:
                continue
            files[str(rel)] = p.read_bytes()
    files["six.py"] = Path(six.__file__).read_bytes()
    return files


@pytest.fixture(scope="module")
def package():
    files = vendored_boto3()
    files["app.py"] = HANDLER.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in sorted(files.items()):
            info = zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100644) << 16
            z.writestr(info, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def world(iam, s3, sqs):
    """A bucket, two queues and a role allowed `in/` and `out/` of the bucket and the first
    queue only."""
    bucket = uniq("rb")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/photo.txt", Body=b"pixels")
    s3.put_object(Bucket=bucket, Key="private/secret.txt", Body=b"secret")
    allowed, other = uniq("rq"), uniq("rq")
    for q in (allowed, other):
        sqs.create_queue(QueueName=q)
    role = uniq("thumbs")
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(TRUST))
    policy = {"Version": POLICY_VERSION, "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/in/*", f"arn:aws:s3:::{bucket}/out/*"]},
        {"Effect": "Allow", "Action": ["sqs:SendMessage", "sqs:GetQueueUrl"],
         "Resource": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{allowed}"},
        {"Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:ListQueues"], "Resource": "*"},
    ]}
    iam.put_role_policy(RoleName=role, PolicyName="thumbs", PolicyDocument=json.dumps(policy))
    return {"bucket": bucket, "allowed": allowed, "other": other, "role": role,
            "policy": policy}


def deploy(lam, package, role, name=None):
    name = name or uniq("fn")
    lam.create_function(FunctionName=name, Runtime="python3.11", Handler="app.handler",
                        Role=role, Code={"ZipFile": package}, Timeout=30, MemorySize=256)
    return name


def call(lam, name, **event):
    r = lam.invoke(FunctionName=name, Payload=json.dumps(event))
    body = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, body
    return body


@pytest.fixture(scope="module")
def fn(lam, package, world):
    return deploy(lam, package, role_arn(world["role"]))


def test_a_role_scoped_to_a_prefix(lam, s3, fn, world):
    b = world["bucket"]
    env = call(lam, fn, op="env")
    assert env["AWS_ACCESS_KEY_ID"].startswith("ASIA")
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9002"
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:9003"
    # Unmodified boto3.client("s3") reads in/ and writes out/ …
    assert call(lam, fn, op="s3_get", bucket=b, key="in/photo.txt") == {"body": "pixels"}
    assert call(lam, fn, op="s3_copy", bucket=b, src="in/photo.txt", dst="out/photo.txt") == {"ok": True}
    assert s3.get_object(Bucket=b, Key="out/photo.txt")["Body"].read() == b"PIXELS"
    # … and nothing else.
    assert call(lam, fn, op="s3_get", bucket=b, key="private/secret.txt")["error"] == "AccessDenied"
    assert call(lam, fn, op="s3_put", bucket=b, key="elsewhere/x", body="x")["error"] == "AccessDenied"
    assert call(lam, fn, op="s3_list_buckets")["error"] == "AccessDenied"
    # SQS the same way: one queue allowed, the other denied.
    sent = call(lam, fn, op="sqs_send", queue=world["allowed"])
    assert sent["ok"] and sent["url"].startswith("http://127.0.0.1:9002/")
    denied = call(lam, fn, op="sqs_send", queue=world["other"])
    assert denied["error"] == "AccessDenied", denied


def test_a_function_without_a_role_gets_no_credentials(lam, package):
    for role in ("arn:aws:iam::123456789012:role/not-here",
                 role_arn(uniq("never-created"))):
        name = deploy(lam, package, role)
        env = call(lam, name, op="env")
        assert env["AWS_ACCESS_KEY_ID"] is None and env["AWS_SESSION_TOKEN"] is None, env
        assert env["AWS_ENDPOINT_URL"] is None
        out = call(lam, name, op="s3_list_buckets")
        assert out["error"] == "NoCredentialsError", out
        lam.delete_function(FunctionName=name)


def test_the_private_endpoint_accepts_only_the_instances_credentials(server, lam, fn):
    admin_id, admin_secret = server.admin_key()
    out = call(lam, fn, op="sqs_as", id=admin_id, secret=admin_secret)
    assert out["error"] == "InvalidClientTokenId", out


def host_address():
    """A non-loopback address of this host, if it has one."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 1))
        return s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()


def test_the_host_is_not_reachable_from_the_namespace(server, lam, fn):
    targets = [["127.0.0.1", server.port], ["127.0.0.1", server.s3_port]]
    ip = host_address()
    if ip and not ip.startswith("127."):
        targets += [[ip, server.port], [ip, server.s3_port]]
    out = call(lam, fn, op="connect", targets=targets + [["127.0.0.1", 9002], ["127.0.0.1", 9003]])
    assert out.pop("127.0.0.1:9002") == "open"
    assert out.pop("127.0.0.1:9003") == "open"
    assert out and all(v != "open" for v in out.values()), out


def test_session_tokens_are_required(server, fn, lam, world):
    env = call(lam, fn, op="env")
    key, secret, token = env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env["AWS_SESSION_TOKEN"]
    assert len(token) >= 100
    r = lam.invoke(FunctionName=fn, Payload=json.dumps({"op": "env"}), LogType="Tail")
    log = base64.b64decode(r["LogResult"]).decode()
    assert "token=****" in log and "secret=****" in log, log
    assert token not in log and secret not in log
    # From the host, against the public listeners: the right token works …
    client("sqs", server.base_url, key, secret, token).list_queues()
    got = client("s3", server.s3_url, key, secret, token).get_object(
        Bucket=world["bucket"], Key="in/photo.txt")
    assert got["Body"].read() == b"pixels"
    # … none or another does not.
    for bad in (None, token[:-4] + "AAAA"):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client("sqs", server.base_url, key, secret, bad).list_queues()
        assert code(e) == "InvalidClientTokenId", bad
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client("s3", server.s3_url, key, secret, bad).get_object(
                Bucket=world["bucket"], Key="in/photo.txt")
        assert code(e) == ("InvalidAccessKeyId" if bad is None else "InvalidToken")
    # A presigned URL carries the token in its query.
    s3 = client("s3", server.s3_url, key, secret, token)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": world["bucket"],
                                                           "Key": "in/photo.txt"})
    assert "X-Amz-Security-Token=" in url
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"pixels"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url.replace("X-Amz-Security-Token=", "X-Amz-Security-Token=x"),
                               timeout=10)
    assert e.value.code in (400, 403)
    # The role's credentials are no access key of the server's.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client("lambda", server.base_url, key, secret, token).list_functions()
    assert code(e) == "AccessDeniedException"


def test_put_role_policy_applies_to_a_live_instance(iam, lam, fn, world):
    before = call(lam, fn, op="env")["AWS_ACCESS_KEY_ID"]
    assert call(lam, fn, op="sqs_send", queue=world["other"])["error"] == "AccessDenied"
    more = {"Version": POLICY_VERSION, "Statement": [
        {"Effect": "Allow", "Action": "sqs:SendMessage",
         "Resource": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{world['other']}"}]}
    iam.put_role_policy(RoleName=world["role"], PolicyName="more", PolicyDocument=json.dumps(more))
    assert call(lam, fn, op="sqs_send", queue=world["other"]) ["ok"]
    iam.delete_role_policy(RoleName=world["role"], PolicyName="more")
    assert call(lam, fn, op="sqs_send", queue=world["other"])["error"] == "AccessDenied"
    # The same instance all along.
    assert call(lam, fn, op="env")["AWS_ACCESS_KEY_ID"] == before


def wait_refused(make_call, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        try:
            make_call()
        except botocore.exceptions.ClientError as e:
            return e.response["Error"]["Code"]
        if time.monotonic() > deadline:
            raise AssertionError("the credentials still work")
        time.sleep(0.25)


def test_credentials_of_a_stopped_instance_are_refused(server, lam, package, world):
    name = deploy(lam, package, role_arn(world["role"]))
    env = call(lam, name, op="env")
    creds = (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env["AWS_SESSION_TOKEN"])
    sqs = client("sqs", server.base_url, *creds)
    s3 = client("s3", server.s3_url, *creds)
    sqs.list_queues()
    s3.get_object(Bucket=world["bucket"], Key="in/photo.txt")
    # Deleting the function stops its instance, and with it its credentials.
    lam.delete_function(FunctionName=name)
    assert wait_refused(sqs.list_queues) == "InvalidClientTokenId"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=world["bucket"], Key="in/photo.txt")
    assert code(e) == "InvalidAccessKeyId"


def test_deleting_the_role_revokes_live_credentials(server, iam, lam, package):
    role = uniq("short")
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(TRUST))
    iam.put_role_policy(RoleName=role, PolicyName="p", PolicyDocument=json.dumps(
        {"Statement": [{"Effect": "Allow", "Action": "sqs:ListQueues", "Resource": "*"}]}))
    name = deploy(lam, package, role_arn(role))
    env = call(lam, name, op="env")
    sqs = client("sqs", server.base_url, env["AWS_ACCESS_KEY_ID"],
                 env["AWS_SECRET_ACCESS_KEY"], env["AWS_SESSION_TOKEN"])
    sqs.list_queues()
    iam.delete_role_policy(RoleName=role, PolicyName="p")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.list_queues()
    assert code(e) == "AccessDenied"
    iam.delete_role(RoleName=role)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.list_queues()
    assert code(e) == "InvalidClientTokenId"
    lam.delete_function(FunctionName=name)


def test_manifest_roles(server, iam, lam, tmp_path):
    role = uniq("mrole")
    fn_a, fn_b = uniq("ma"), uniq("mb")
    policy = {"Statement": [{"Effect": "Allow", "Action": "sqs:ListQueues", "Resource": "*"}]}
    (tmp_path / "app.py").write_text("def handler(event, context):\n    return 1\n")
    (tmp_path / "nimbus.toml").write_text(f"""
[roles.{role}]
policy = '''{json.dumps(policy)}'''
max_session_duration = 7200

[functions.{fn_a}]
runtime = "python3.11"
handler = "app.handler"
role = "{role}"

[functions.{fn_b}]
runtime = "python3.11"
handler = "app.handler"
policy = '''{json.dumps(policy)}'''
""")
    env = dict(os.environ, NIMBUS_CREDENTIALS_FILE=str(server.workdir / "data" / "credentials"))
    env.pop("AWS_ACCESS_KEY_ID", None)
    env.pop("AWS_SECRET_ACCESS_KEY", None)
    for _ in range(2):  # the second deploy updates what the first created
        out = subprocess.run([str(server.binary), "--endpoint", server.base_url, "deploy",
                              str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
    assert f"role {role}: policy updated" in out.stdout
    got = iam.get_role(RoleName=role)["Role"]
    assert got["MaxSessionDuration"] == 7200
    assert iam.get_role_policy(RoleName=role, PolicyName="nimbus-manifest")["PolicyDocument"] == policy
    assert iam.get_role_policy(RoleName=f"fn-{fn_b}", PolicyName="nimbus-manifest")["PolicyDocument"] == policy
    assert lam.get_function_configuration(FunctionName=fn_a)["Role"] == role_arn(role)
    assert lam.get_function_configuration(FunctionName=fn_b)["Role"] == role_arn(f"fn-{fn_b}")


def test_provisioned_instances_get_credentials(lam, package, world):
    name = deploy(lam, package, role_arn(world["role"]))
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live",
                                           ProvisionedConcurrentExecutions=1)
    deadline = time.monotonic() + 60
    while lam.get_provisioned_concurrency_config(
            FunctionName=name, Qualifier="live")["Status"] != "READY":
        assert time.monotonic() < deadline, "provisioned concurrency never became READY"
        time.sleep(0.2)
    env = call(lam, f"{name}:live", op="env")
    assert env["AWS_ACCESS_KEY_ID"].startswith("ASIA")
    got = call(lam, f"{name}:live", op="s3_get", bucket=world["bucket"], key="in/photo.txt")
    assert got == {"body": "pixels"}
    lam.delete_function(FunctionName=name)
