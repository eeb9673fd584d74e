"""Every CreateFunction / UpdateFunctionConfiguration field: it works and round-trips, it is
accepted with the empty value Terraform and SAM send, or it is refused with
InvalidParameterValueException naming the field (docs/lambda-compatibility.md, "Function
configuration fields"). No field may be accepted and dropped silently."""

import base64
import json
import platform
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import ROLE, python_zip, unique_name

DOC = Path(__file__).resolve().parents[2] / "docs" / "lambda-compatibility.md"
HOST_ARCH = "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
OTHER_ARCH = "x86_64" if HOST_ARCH == "arm64" else "arm64"

# Fields Nimbus implements: a value, and how the configuration reports it.
WORKS = {
    "Description": ("a description", lambda c: c["Description"] == "a description"),
    "Timeout": (17, lambda c: c["Timeout"] == 17),
    "MemorySize": (256, lambda c: c["MemorySize"] == 256),
    "EphemeralStorage": ({"Size": 1024}, lambda c: c["EphemeralStorage"] == {"Size": 1024}),
    "Environment": ({"Variables": {"K": "v"}}, lambda c: c["Environment"]["Variables"] == {"K": "v"}),
    "Handler": ("main.handler", lambda c: c["Handler"] == "main.handler"),
    "Runtime": ("python3.12", lambda c: c["Runtime"] == "python3.12"),
    "Role": ("arn:aws:iam::123456789012:role/other", lambda c: c["Role"].endswith("role/other")),
    "TracingConfig": ({"Mode": "Active"}, lambda c: c["TracingConfig"] == {"Mode": "Active"}),
    "LoggingConfig": ({"LogFormat": "JSON", "ApplicationLogLevel": "DEBUG"},
                      lambda c: c["LoggingConfig"]["LogFormat"] == "JSON"
                      and c["LoggingConfig"]["ApplicationLogLevel"] == "DEBUG"
                      and c["LoggingConfig"]["SystemLogLevel"] == "INFO"),
    # Lambda Managed Instances: the concurrency per execution environment is kept (the
    # capacity provider is not: Nimbus runs functions on its own hosts).
    "CapacityProviderConfig": (
        {"LambdaManagedInstancesCapacityProviderConfig": {
            "CapacityProviderArn": "arn:aws:lambda:us-east-1:123456789012:capacity-provider:cp",
            "PerExecutionEnvironmentMaxConcurrency": 4}},
        lambda c: c["CapacityProviderConfig"]["LambdaManagedInstancesCapacityProviderConfig"]
        ["PerExecutionEnvironmentMaxConcurrency"] == 4),
}
# Create-only fields that work (checked by the create itself and GetFunction).
WORKS_CREATE_ONLY = ["FunctionName", "Code", "Publish", "Tags"]
# Update-only field that works (covered by test_lambda_api's RevisionId tests too).
WORKS_UPDATE_ONLY = ["RevisionId"]
# Fields that work with resources a test makes first: layer versions (test_layers.py) and
# a dead-letter queue (test_dead_letter_config_round_trips_per_version below; delivery:
# tests/e2e/dlq.rs).
WORKS_ELSEWHERE = ["Layers", "DeadLetterConfig"]

# Empty values as Terraform and SAM send them: accepted, and nothing changes.
ACCEPTED_EMPTY = [
    ("VpcConfig", {"SubnetIds": [], "SecurityGroupIds": []}),
    ("VpcConfig", {"SubnetIds": [], "SecurityGroupIds": [], "Ipv6AllowedForDualStack": False}),
    ("KMSKeyArn", ""),
    ("FileSystemConfigs", []),
    ("DeadLetterConfig", {}),
    ("DeadLetterConfig", {"TargetArn": ""}),
    ("ImageConfig", {}),
    ("ImageConfig", {"EntryPoint": [], "Command": [], "WorkingDirectory": ""}),
    ("SnapStart", {"ApplyOn": "None"}),
    ("Layers", []),
    ("LoggingConfig", {"LogFormat": "Text"}),
    ("LoggingConfig", {"LogFormat": "Text", "LogGroup": "/aws/lambda/{name}"}),
    ("PackageType", "Zip"),
    ("Architectures", [HOST_ARCH]),
    ("CodeSigningConfigArn", ""),
]
CREATE_ONLY = {"PackageType", "Architectures", "CodeSigningConfigArn"}

# Values Nimbus cannot honour: refused, naming the field.
REFUSED = [
    ("VpcConfig", {"SubnetIds": ["subnet-0abc"], "SecurityGroupIds": ["sg-0abc"]}),
    ("KMSKeyArn", "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
    ("FileSystemConfigs", [{"Arn": "arn:aws:elasticfilesystem:us-east-1:123456789012:"
                                   "access-point/fsap-0123456789abcdef0",
                            "LocalMountPath": "/mnt/efs"}]),
    ("DeadLetterConfig", {"TargetArn": "arn:aws:sns:us-east-1:000000000000:topic"}),
    ("DeadLetterConfig", {"TargetArn": "arn:aws:sqs:us-east-1:000000000000:no-such-queue"}),
    # Lambda takes standard queues only.
    ("DeadLetterConfig", {"TargetArn": "arn:aws:sqs:us-east-1:000000000000:dlq.fifo"}),
    ("ImageConfig", {"Command": ["app.handler"]}),
    ("SnapStart", {"ApplyOn": "PublishedVersions"}),
    ("PackageType", "Image"),
    ("Architectures", [OTHER_ARCH]),
    ("CodeSigningConfigArn", "arn:aws:lambda:us-east-1:123456789012:code-signing-config:csc-0"),
    ("TracingConfig", {"Mode": "Verbose"}),
]


def create_kwargs(name, **extra):
    kw = dict(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
              Code={"ZipFile": python_zip()})
    kw.update(extra)
    return kw


def fill(value, name):
    """Puts the function's name into `{name}` placeholders of a value."""
    return json.loads(json.dumps(value).replace("{name}", name))


def refused_naming(excinfo, field):
    err = excinfo.value.response
    assert err["Error"]["Code"] == "InvalidParameterValueException", err
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400, err
    assert field in err["Error"]["Message"], err


def doc_fields():
    text = DOC.read_text().split("### Function configuration fields", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", text, re.M))


def test_the_tables_cover_every_documented_field():
    works = set(WORKS) | set(WORKS_CREATE_ONLY) | set(WORKS_UPDATE_ONLY) | set(WORKS_ELSEWHERE)
    covered = works | {f for f, _ in ACCEPTED_EMPTY} | {f for f, _ in REFUSED}
    assert doc_fields() == covered
    # Every refused field has an accepted empty value, and every one is refused when set.
    refusable = doc_fields() - works
    assert refusable <= {f for f, _ in ACCEPTED_EMPTY}
    assert refusable <= {f for f, _ in REFUSED}


def test_working_fields_round_trip_on_create_update_and_get(lambda_client):
    name = unique_name("fields")
    extra = {k: v for k, (v, _) in WORKS.items() if k not in ("Handler", "Runtime")}
    created = lambda_client.create_function(**create_kwargs(name, Tags={"t": "1"}, **extra))
    try:
        got = lambda_client.get_function(FunctionName=name)
        for cfg in (created, lambda_client.get_function_configuration(FunctionName=name),
                    got["Configuration"]):
            for field, (_, ok) in WORKS.items():
                if field not in ("Handler", "Runtime"):
                    assert ok(cfg), (field, cfg)
        assert got["Tags"] == {"t": "1"}
        # A second value of each through UpdateFunctionConfiguration.
        updated = lambda_client.update_function_configuration(
            FunctionName=name, **{k: v for k, (v, _) in WORKS.items()})
        for cfg in (updated, lambda_client.get_function_configuration(FunctionName=name)):
            for field, (_, ok) in WORKS.items():
                assert ok(cfg), (field, cfg)
    finally:
        lambda_client.delete_function(FunctionName=name)


def test_tracing_config_is_stored_per_version(lambda_client):
    name = unique_name("trace")
    created = lambda_client.create_function(
        **create_kwargs(name, TracingConfig={"Mode": "Active"}, Publish=True))
    try:
        assert created["TracingConfig"] == {"Mode": "Active"}
        assert created["Version"] == "1"
        lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name)
        updated = lambda_client.update_function_configuration(
            FunctionName=name, TracingConfig={"Mode": "PassThrough"})
        assert updated["TracingConfig"] == {"Mode": "PassThrough"}
        # Version 1 keeps the mode it was published with; $LATEST has the new one.
        v1 = lambda_client.get_function_configuration(FunctionName=name, Qualifier="1")
        assert v1["TracingConfig"] == {"Mode": "Active"}
        latest = lambda_client.get_function(FunctionName=name)["Configuration"]
        assert latest["TracingConfig"] == {"Mode": "PassThrough"}
        # Updating another field leaves the mode alone.
        again = lambda_client.update_function_configuration(FunctionName=name, Timeout=9)
        assert again["TracingConfig"] == {"Mode": "PassThrough"}
    finally:
        lambda_client.delete_function(FunctionName=name)


def test_dead_letter_config_round_trips_per_version(lambda_client, nimbus):
    queue = unique_name("dlq")
    req = urllib.request.Request(f"{nimbus.base_url}/v1/queues/{queue}", data=b"{}",
                                 method="PUT", headers={"content-type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()
    target = f"arn:aws:sqs:us-east-1:000000000000:{queue}"
    name = unique_name("dlqfn")
    created = lambda_client.create_function(
        **create_kwargs(name, DeadLetterConfig={"TargetArn": target}, Publish=True))
    try:
        assert created["DeadLetterConfig"] == {"TargetArn": target}
        lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name)
        # Clearing it ($LATEST) leaves version 1 with the queue it was published with.
        cleared = lambda_client.update_function_configuration(
            FunctionName=name, DeadLetterConfig={"TargetArn": ""})
        assert "DeadLetterConfig" not in cleared
        v1 = lambda_client.get_function_configuration(FunctionName=name, Qualifier="1")
        assert v1["DeadLetterConfig"] == {"TargetArn": target}
        again = lambda_client.update_function_configuration(
            FunctionName=name, DeadLetterConfig={"TargetArn": target})
        assert again["DeadLetterConfig"] == {"TargetArn": target}
    finally:
        lambda_client.delete_function(FunctionName=name)


@pytest.mark.parametrize("field,value", ACCEPTED_EMPTY,
                         ids=[f"{f}-{i}" for i, (f, _) in enumerate(ACCEPTED_EMPTY)])
def test_empty_values_are_accepted(raw_client, field, value):
    name = unique_name("empty")
    created = raw_client.create_function(**create_kwargs(name, **{field: fill(value, name)}))
    try:
        assert created["State"] == "Active"
        assert created["Architectures"] == [HOST_ARCH]
        assert created["PackageType"] == "Zip"
        if field not in CREATE_ONLY:
            updated = raw_client.update_function_configuration(
                FunctionName=name, **{field: fill(value, name)})
            assert updated["RevisionId"] != created["RevisionId"]
    finally:
        raw_client.delete_function(FunctionName=name)


@pytest.fixture(scope="module")
def existing(lambda_client):
    name = unique_name("refuse")
    lambda_client.create_function(**create_kwargs(name))
    yield name
    lambda_client.delete_function(FunctionName=name)


@pytest.mark.parametrize("field,value", REFUSED,
                         ids=[f"{f}-{i}" for i, (f, _) in enumerate(REFUSED)])
def test_unsupported_values_are_refused_naming_the_field(raw_client, existing, field, value):
    name = unique_name("refused")
    with pytest.raises(raw_client.exceptions.InvalidParameterValueException) as e:
        raw_client.create_function(**create_kwargs(name, **{field: value}))
    refused_naming(e, field)
    with pytest.raises(raw_client.exceptions.ResourceNotFoundException):
        raw_client.get_function(FunctionName=name)
    if field not in CREATE_ONLY:
        before = raw_client.get_function_configuration(FunctionName=existing)
        with pytest.raises(raw_client.exceptions.InvalidParameterValueException) as e:
            raw_client.update_function_configuration(FunctionName=existing, **{field: value})
        refused_naming(e, field)
        after = raw_client.get_function_configuration(FunctionName=existing)
        assert after["RevisionId"] == before["RevisionId"]


def raw_json(nimbus, method, path, body):
    req = urllib.request.Request(nimbus.base_url + path, data=json.dumps(body).encode(),
                                 method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read() or b"null")


def test_unknown_fields_and_fields_of_the_other_operation_are_refused(nimbus, existing):
    name = unique_name("unknown")
    body = create_kwargs(name, Timeut=3)
    body["Code"] = {"ZipFile": base64.b64encode(python_zip()).decode()}
    status, headers, answer = raw_json(nimbus, "POST", "/2015-03-31/functions", body)
    assert status == 400, answer
    assert headers["x-amzn-errortype"].startswith("InvalidParameterValueException"), headers
    assert "Timeut" in answer["message"], answer
    for field, value in [("Code", {"ZipFile": ""}), ("Architectures", [HOST_ARCH]),
                         ("Publish", True), ("Bogus", 1)]:
        status, headers, answer = raw_json(
            nimbus, "PUT", f"/2015-03-31/functions/{existing}/configuration", {field: value})
        assert status == 400, (field, answer)
        assert headers["x-amzn-errortype"].startswith("InvalidParameterValueException")
        assert field in answer["message"], (field, answer)
