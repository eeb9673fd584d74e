"""The Lambda control plane and Invoke through unmodified boto3, checked against the AWS
contract (../shared/lambda-reference.md sections 2 and 3, botocore's service model)."""

import base64
import json
import re
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError, WaiterError

from conftest import (
    ROLE,
    code_sha256,
    error_code,
    http_status,
    invoke_json,
    node_zip,
    python_zip,
    unique_name,
    zip_bytes,
)

FAST_WAIT = {"Delay": 1, "MaxAttempts": 15}
LAST_MODIFIED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def fn_arn_re(name, qualifier=None):
    q = f":{re.escape(qualifier)}" if qualifier else ""
    return re.compile(rf"^arn:aws:lambda:us-east-1:\d{{12}}:function:{re.escape(name)}{q}$")


def wait_updated(client, name):
    client.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=FAST_WAIT)


def assert_client_error(excinfo, code, status):
    err = excinfo.value
    assert error_code(err) == code, err.response
    assert http_status(err) == status, err.response
    headers = err.response["ResponseMetadata"]["HTTPHeaders"]
    assert headers.get("x-amzn-errortype", "").split(":")[0] == code, headers
    assert err.response["ResponseMetadata"].get("RequestId"), "x-amzn-RequestId missing"
    assert err.response["Error"].get("Message"), f"{code} without a message: {err.response}"


# --------------------------------------------------------------------------------------------
# CreateFunction / GetFunction / GetFunctionConfiguration
# --------------------------------------------------------------------------------------------

def test_create_function_returns_full_configuration(lambda_client, make_function):
    name = unique_name("create")
    zip_data = python_zip("v1")
    resp = make_function(
        name=name, zip_data=zip_data, Description="made by pytest", Timeout=7, MemorySize=256,
        Environment={"Variables": {"T_ONE": "1"}},
    )
    assert http_status(resp) == 201
    assert resp["ResponseMetadata"].get("RequestId"), "x-amzn-RequestId missing"
    assert resp["FunctionName"] == name
    assert fn_arn_re(name).match(resp["FunctionArn"]), resp["FunctionArn"]
    assert resp["Runtime"] == "python3.11"
    assert resp["Role"] == ROLE
    assert resp["Handler"] == "app.handler"
    assert resp["CodeSize"] == len(zip_data)
    assert resp["CodeSha256"] == code_sha256(zip_data)
    assert resp["Description"] == "made by pytest"
    assert resp["Timeout"] == 7
    assert resp["MemorySize"] == 256
    assert resp["Version"] == "$LATEST"
    assert resp["Environment"] == {"Variables": {"T_ONE": "1"}}
    assert LAST_MODIFIED.match(resp["LastModified"]), resp["LastModified"]
    assert UUID.match(resp["RevisionId"]), resp["RevisionId"]
    assert resp["State"] in ("Pending", "Active")
    assert resp["PackageType"] == "Zip"
    assert resp["Architectures"] == ["x86_64"]
    assert resp["TracingConfig"] == {"Mode": "PassThrough"}
    assert resp["EphemeralStorage"] == {"Size": 512}
    assert "LastUpdateStatus" in resp


def test_create_function_defaults(lambda_client, make_function):
    resp = make_function()
    assert resp["Timeout"] == 3
    assert resp["MemorySize"] == 128
    assert resp["Description"] == ""


def test_get_function_returns_configuration_code_and_tags(lambda_client, make_function):
    name = unique_name("get")
    created = make_function(name=name, Tags={"team": "core"})
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=FAST_WAIT)
    resp = lambda_client.get_function(FunctionName=name)
    assert http_status(resp) == 200
    conf = resp["Configuration"]
    for key in ("FunctionName", "FunctionArn", "Runtime", "Handler", "CodeSha256", "CodeSize",
                "Version", "Role", "Timeout", "MemorySize"):
        assert conf[key] == created[key], key
    assert conf["State"] == "Active"
    assert conf["LastUpdateStatus"] == "Successful"
    assert resp["Code"]["RepositoryType"] == "S3"
    assert resp["Code"]["Location"].startswith("http")
    assert resp["Tags"] == {"team": "core"}


def test_get_function_configuration(lambda_client, make_function):
    created = make_function()
    resp = lambda_client.get_function_configuration(FunctionName=created["FunctionName"])
    assert http_status(resp) == 200
    assert resp["FunctionArn"] == created["FunctionArn"]
    assert resp["CodeSha256"] == created["CodeSha256"]
    assert resp["State"] in ("Pending", "Active")


def test_get_function_by_arn(lambda_client, make_function):
    created = make_function()
    resp = lambda_client.get_function(FunctionName=created["FunctionArn"])
    assert resp["Configuration"]["FunctionName"] == created["FunctionName"]


def test_create_node_function_and_invoke(lambda_client, make_function):
    name = unique_name("node")
    make_function(name=name, zip_data=node_zip("hi-node"), runtime="nodejs20.x",
                  handler="index.handler")
    resp, out = invoke_json(lambda_client, FunctionName=name, Payload={"x": 1})
    assert resp["StatusCode"] == 200
    assert out == {"tag": "hi-node", "event": {"x": 1}, "functionName": name}


def test_create_with_publish_creates_version_1(lambda_client, make_function):
    name = unique_name("pub")
    make_function(name=name, Publish=True)
    versions = [v["Version"] for v in lambda_client.list_versions_by_function(
        FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1"]


# --------------------------------------------------------------------------------------------
# ListFunctions pagination
# --------------------------------------------------------------------------------------------

PAGE_COUNT = 55


@pytest.fixture(scope="module")
def many_functions(lambda_client):
    prefix = unique_name("page")
    names = [f"{prefix}-{i:02d}" for i in range(PAGE_COUNT)]
    zip_data = python_zip("page")
    for n in names:
        lambda_client.create_function(FunctionName=n, Runtime="python3.11", Role=ROLE,
                                      Handler="app.handler", Code={"ZipFile": zip_data})
    yield set(names)
    for n in names:
        try:
            lambda_client.delete_function(FunctionName=n)
        except ClientError:
            pass


def test_list_functions_first_page_is_at_most_50(lambda_client, many_functions):
    resp = lambda_client.list_functions()
    assert http_status(resp) == 200
    assert 0 < len(resp["Functions"]) <= 50
    assert resp.get("NextMarker"), "more than 50 functions exist, so NextMarker must be set"
    # MaxItems above 50 still gives at most 50.
    resp = lambda_client.list_functions(MaxItems=1000)
    assert len(resp["Functions"]) <= 50
    assert resp.get("NextMarker")


def test_list_functions_marker_and_max_items(lambda_client, many_functions):
    seen = []
    marker = None
    pages = 0
    while True:
        kwargs = {"MaxItems": 10}
        if marker:
            kwargs["Marker"] = marker
        resp = lambda_client.list_functions(**kwargs)
        pages += 1
        assert len(resp["Functions"]) <= 10
        seen.extend(f["FunctionName"] for f in resp["Functions"])
        marker = resp.get("NextMarker")
        if not marker:
            break
        assert pages < 100, "pagination does not end"
    assert len(seen) == len(set(seen)), "a function was listed twice"
    assert many_functions <= set(seen)
    assert pages >= 6


def test_list_functions_paginator(lambda_client, many_functions):
    paginator = lambda_client.get_paginator("list_functions")
    pages = list(paginator.paginate(PaginationConfig={"PageSize": 7}))
    names = [f["FunctionName"] for p in pages for f in p["Functions"]]
    assert all(len(p["Functions"]) <= 7 for p in pages)
    assert len(names) == len(set(names))
    assert many_functions <= set(names)
    assert len(pages) >= 8
    # The paginator's own MaxItems/StartingToken resume where it stopped.
    first = paginator.paginate(PaginationConfig={"MaxItems": 20, "PageSize": 7}).build_full_result()
    assert len(first["Functions"]) == 20 and first.get("NextToken")
    rest = paginator.paginate(
        PaginationConfig={"StartingToken": first["NextToken"], "PageSize": 7}).build_full_result()
    resumed = [f["FunctionName"] for f in first["Functions"] + rest["Functions"]]
    assert sorted(resumed) == sorted(names)


def test_list_functions_function_version_all(lambda_client, make_function):
    name = unique_name("listall")
    make_function(name=name)
    lambda_client.publish_version(FunctionName=name)
    paginator = lambda_client.get_paginator("list_functions")
    default = [f for p in paginator.paginate() for f in p["Functions"]
               if f["FunctionName"] == name]
    assert [f["Version"] for f in default] == ["$LATEST"]
    every = [f for p in paginator.paginate(FunctionVersion="ALL") for f in p["Functions"]
             if f["FunctionName"] == name]
    assert sorted(f["Version"] for f in every) == ["$LATEST", "1"]


# --------------------------------------------------------------------------------------------
# Updates and RevisionId
# --------------------------------------------------------------------------------------------

def test_update_function_code(lambda_client, make_function):
    created = make_function(zip_data=python_zip("old"))
    name = created["FunctionName"]
    new_zip = python_zip("new")
    resp = lambda_client.update_function_code(FunctionName=name, ZipFile=new_zip)
    assert http_status(resp) == 200
    assert resp["CodeSha256"] == code_sha256(new_zip)
    assert resp["CodeSize"] == len(new_zip)
    assert resp["RevisionId"] != created["RevisionId"]
    assert resp["LastUpdateStatus"] in ("InProgress", "Successful")
    wait_updated(lambda_client, name)
    _, out = invoke_json(lambda_client, FunctionName=name, Payload={})
    assert out["tag"] == "new"


def test_update_function_code_with_publish(lambda_client, make_function):
    created = make_function(zip_data=python_zip("a"))
    name = created["FunctionName"]
    new_zip = python_zip("b")
    resp = lambda_client.update_function_code(FunctionName=name, ZipFile=new_zip, Publish=True)
    assert http_status(resp) == 200
    wait_updated(lambda_client, name)
    versions = lambda_client.list_versions_by_function(FunctionName=name)["Versions"]
    published = [v for v in versions if v["Version"] != "$LATEST"]
    assert len(published) == 1
    assert published[0]["CodeSha256"] == code_sha256(new_zip)


def test_update_function_configuration(lambda_client, make_function):
    created = make_function()
    name = created["FunctionName"]
    resp = lambda_client.update_function_configuration(
        FunctionName=name, MemorySize=512, Timeout=20, Description="updated",
        Environment={"Variables": {"T_COLOR": "blue"}},
    )
    assert http_status(resp) == 200
    assert resp["MemorySize"] == 512
    assert resp["Timeout"] == 20
    assert resp["Description"] == "updated"
    assert resp["Environment"] == {"Variables": {"T_COLOR": "blue"}}
    assert resp["RevisionId"] != created["RevisionId"]
    wait_updated(lambda_client, name)
    conf = lambda_client.get_function_configuration(FunctionName=name)
    assert (conf["MemorySize"], conf["Timeout"]) == (512, 20)
    assert conf["CodeSha256"] == created["CodeSha256"], "a config update must keep the code"
    _, out = invoke_json(lambda_client, FunctionName=name, Payload={})
    assert out["env"] == {"T_COLOR": "blue"}


def test_update_function_configuration_handler_and_runtime(lambda_client, make_function):
    src = "def other(event, context):\n    return {'other': True}\n"
    created = make_function(zip_data=zip_bytes({"app.py": src}), handler="app.missing")
    name = created["FunctionName"]
    resp = lambda_client.update_function_configuration(
        FunctionName=name, Handler="app.other", Runtime="python3.12")
    assert (resp["Handler"], resp["Runtime"]) == ("app.other", "python3.12")
    wait_updated(lambda_client, name)
    _, out = invoke_json(lambda_client, FunctionName=name, Payload={})
    assert out == {"other": True}


def test_revision_id_mismatch_is_precondition_failed(lambda_client, make_function):
    created = make_function()
    name = created["FunctionName"]
    stale = created["RevisionId"]
    ok = lambda_client.update_function_configuration(
        FunctionName=name, Description="first", RevisionId=stale)
    assert ok["RevisionId"] != stale
    wait_updated(lambda_client, name)
    exc = lambda_client.exceptions.PreconditionFailedException
    with pytest.raises(exc) as e:
        lambda_client.update_function_configuration(
            FunctionName=name, Description="second", RevisionId=stale)
    assert_client_error(e, "PreconditionFailedException", 412)
    with pytest.raises(exc) as e:
        lambda_client.update_function_code(
            FunctionName=name, ZipFile=python_zip("x"), RevisionId=stale)
    assert_client_error(e, "PreconditionFailedException", 412)
    with pytest.raises(exc) as e:
        lambda_client.publish_version(FunctionName=name, RevisionId=stale)
    assert_client_error(e, "PreconditionFailedException", 412)
    # Nothing above changed the function.
    conf = lambda_client.get_function_configuration(FunctionName=name)
    assert conf["Description"] == "first"
    assert conf["RevisionId"] == ok["RevisionId"]
    assert lambda_client.list_versions_by_function(FunctionName=name)["Versions"][-1][
        "Version"] == "$LATEST"
    # The current RevisionId is accepted.
    resp = lambda_client.update_function_code(
        FunctionName=name, ZipFile=python_zip("y"), RevisionId=ok["RevisionId"])
    assert http_status(resp) == 200


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------

def test_publish_version_and_list_versions(lambda_client, make_function):
    zip1 = python_zip("one")
    created = make_function(zip_data=zip1)
    name = created["FunctionName"]
    v1 = lambda_client.publish_version(FunctionName=name, Description="first release")
    assert http_status(v1) == 201
    assert v1["Version"] == "1"
    assert fn_arn_re(name, "1").match(v1["FunctionArn"]), v1["FunctionArn"]
    assert v1["CodeSha256"] == code_sha256(zip1)
    assert v1["Description"] == "first release"
    assert v1["State"] in ("Pending", "Active")

    # Nothing changed: publishing again returns the same version.
    again = lambda_client.publish_version(FunctionName=name)
    assert again["Version"] == "1"

    zip2 = python_zip("two")
    lambda_client.update_function_code(FunctionName=name, ZipFile=zip2)
    wait_updated(lambda_client, name)
    v2 = lambda_client.publish_version(FunctionName=name)
    assert v2["Version"] == "2"
    assert fn_arn_re(name, "2").match(v2["FunctionArn"])

    resp = lambda_client.list_versions_by_function(FunctionName=name)
    assert http_status(resp) == 200
    versions = resp["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1", "2"]
    assert versions[1]["CodeSha256"] == code_sha256(zip1)
    assert versions[2]["CodeSha256"] == code_sha256(zip2)
    assert fn_arn_re(name, "1").match(versions[1]["FunctionArn"])

    # Versions are immutable snapshots.
    conf1 = lambda_client.get_function_configuration(FunctionName=name, Qualifier="1")
    assert conf1["Version"] == "1"
    assert conf1["CodeSha256"] == code_sha256(zip1)
    assert fn_arn_re(name, "1").match(conf1["FunctionArn"])
    got = lambda_client.get_function(FunctionName=name, Qualifier="2")
    assert got["Configuration"]["Version"] == "2"

    r1, out1 = invoke_json(lambda_client, FunctionName=name, Qualifier="1", Payload={})
    assert (r1["ExecutedVersion"], out1["tag"], out1["function_version"]) == ("1", "one", "1")
    r2, out2 = invoke_json(lambda_client, FunctionName=name, Qualifier="2", Payload={})
    assert (r2["ExecutedVersion"], out2["tag"]) == ("2", "two")
    rl, outl = invoke_json(lambda_client, FunctionName=name, Payload={})
    assert (rl["ExecutedVersion"], outl["tag"]) == ("$LATEST", "two")
    rq, _ = invoke_json(lambda_client, FunctionName=name, Qualifier="$LATEST", Payload={})
    assert rq["ExecutedVersion"] == "$LATEST"


def test_list_versions_pagination(lambda_client, make_function):
    created = make_function(zip_data=python_zip("p0"))
    name = created["FunctionName"]
    for i in range(1, 3):
        lambda_client.publish_version(FunctionName=name)
        lambda_client.update_function_code(FunctionName=name, ZipFile=python_zip(f"p{i}"))
        wait_updated(lambda_client, name)
    first = lambda_client.list_versions_by_function(FunctionName=name, MaxItems=1)
    assert len(first["Versions"]) == 1 and first.get("NextMarker")
    pages = lambda_client.get_paginator("list_versions_by_function").paginate(
        FunctionName=name, PaginationConfig={"PageSize": 1})
    assert [v["Version"] for p in pages for v in p["Versions"]] == ["$LATEST", "1", "2"]


def test_publish_version_code_sha256_precondition(lambda_client, make_function):
    zip_data = python_zip("sha")
    created = make_function(zip_data=zip_data)
    name = created["FunctionName"]
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException) as e:
        lambda_client.publish_version(
            FunctionName=name, CodeSha256="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    assert_client_error(e, "InvalidParameterValueException", 400)
    assert [v["Version"] for v in lambda_client.list_versions_by_function(
        FunctionName=name)["Versions"]] == ["$LATEST"]
    ok = lambda_client.publish_version(FunctionName=name, CodeSha256=code_sha256(zip_data))
    assert ok["Version"] == "1"


# --------------------------------------------------------------------------------------------
# Aliases
# --------------------------------------------------------------------------------------------

@pytest.fixture
def two_versions(lambda_client, make_function):
    """A function with version 1 (tag "v1") and version 2 (tag "v2")."""
    created = make_function(zip_data=python_zip("v1"))
    name = created["FunctionName"]
    assert lambda_client.publish_version(FunctionName=name)["Version"] == "1"
    lambda_client.update_function_code(FunctionName=name, ZipFile=python_zip("v2"))
    wait_updated(lambda_client, name)
    assert lambda_client.publish_version(FunctionName=name)["Version"] == "2"
    return created


def test_alias_crud(lambda_client, two_versions):
    name = two_versions["FunctionName"]
    created = lambda_client.create_alias(
        FunctionName=name, Name="live", FunctionVersion="1", Description="prod")
    assert http_status(created) == 201
    assert created["Name"] == "live"
    assert created["FunctionVersion"] == "1"
    assert created["Description"] == "prod"
    assert fn_arn_re(name, "live").match(created["AliasArn"]), created["AliasArn"]
    assert UUID.match(created["RevisionId"])

    got = lambda_client.get_alias(FunctionName=name, Name="live")
    assert http_status(got) == 200
    assert (got["AliasArn"], got["FunctionVersion"]) == (created["AliasArn"], "1")

    lambda_client.create_alias(FunctionName=name, Name="beta", FunctionVersion="$LATEST")
    listed = lambda_client.list_aliases(FunctionName=name)
    assert http_status(listed) == 200
    assert sorted(a["Name"] for a in listed["Aliases"]) == ["beta", "live"]
    only_v1 = lambda_client.list_aliases(FunctionName=name, FunctionVersion="1")
    assert [a["Name"] for a in only_v1["Aliases"]] == ["live"]

    updated = lambda_client.update_alias(
        FunctionName=name, Name="live", FunctionVersion="2", RevisionId=created["RevisionId"])
    assert http_status(updated) == 200
    assert updated["FunctionVersion"] == "2"
    assert updated["Description"] == "prod", "fields not sent keep their values"
    assert updated["RevisionId"] != created["RevisionId"]
    with pytest.raises(lambda_client.exceptions.PreconditionFailedException) as e:
        lambda_client.update_alias(FunctionName=name, Name="live", FunctionVersion="1",
                                   RevisionId=created["RevisionId"])
    assert_client_error(e, "PreconditionFailedException", 412)

    with pytest.raises(lambda_client.exceptions.ResourceConflictException) as e:
        lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    assert_client_error(e, "ResourceConflictException", 409)

    deleted = lambda_client.delete_alias(FunctionName=name, Name="live")
    assert http_status(deleted) == 204
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException) as e:
        lambda_client.get_alias(FunctionName=name, Name="live")
    assert_client_error(e, "ResourceNotFoundException", 404)
    assert [a["Name"] for a in lambda_client.list_aliases(FunctionName=name)["Aliases"]] == [
        "beta"]


def test_alias_to_missing_version_is_not_found(lambda_client, two_versions):
    name = two_versions["FunctionName"]
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException) as e:
        lambda_client.create_alias(FunctionName=name, Name="ghost", FunctionVersion="99")
    assert_client_error(e, "ResourceNotFoundException", 404)


def test_alias_name_all_digits_is_invalid(lambda_client, two_versions):
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException) as e:
        lambda_client.create_alias(FunctionName=two_versions["FunctionName"], Name="123",
                                   FunctionVersion="1")
    assert_client_error(e, "InvalidParameterValueException", 400)


def test_weighted_alias_runs_both_versions(lambda_client, two_versions):
    name = two_versions["FunctionName"]
    alias = lambda_client.create_alias(
        FunctionName=name, Name="canary", FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}},
    )
    assert alias["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.5}}
    got = lambda_client.get_alias(FunctionName=name, Name="canary")
    assert got["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.5}}

    counts = {}
    for _ in range(50):
        resp, out = invoke_json(lambda_client, FunctionName=name, Qualifier="canary", Payload={})
        assert resp["StatusCode"] == 200
        executed = resp["ExecutedVersion"]
        assert executed in ("1", "2"), executed
        assert out["tag"] == f"v{executed}", "X-Amz-Executed-Version must name the version that ran"
        counts[executed] = counts.get(executed, 0) + 1
    assert set(counts) == {"1", "2"}, f"both versions must run over 50 calls: {counts}"

    # Removing the routing config sends everything to the primary version.
    updated = lambda_client.update_alias(FunctionName=name, Name="canary",
                                         RoutingConfig={"AdditionalVersionWeights": {}})
    assert not updated.get("RoutingConfig", {}).get("AdditionalVersionWeights")
    for _ in range(10):
        resp, _ = invoke_json(lambda_client, FunctionName=name, Qualifier="canary", Payload={})
        assert resp["ExecutedVersion"] == "1"


def test_weighted_alias_weight_out_of_range_is_invalid(raw_client, two_versions):
    with pytest.raises(raw_client.exceptions.InvalidParameterValueException) as e:
        raw_client.create_alias(
            FunctionName=two_versions["FunctionName"], Name="toomuch", FunctionVersion="1",
            RoutingConfig={"AdditionalVersionWeights": {"2": 1.5}})
    assert_client_error(e, "InvalidParameterValueException", 400)


# --------------------------------------------------------------------------------------------
# Invoke
# --------------------------------------------------------------------------------------------

def test_invoke_by_name_full_arn_partial_arn_and_alias(lambda_client, two_versions):
    name = two_versions["FunctionName"]
    arn = two_versions["FunctionArn"]
    account = arn.split(":")[4]
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    cases = [
        (dict(FunctionName=name), "$LATEST", "v2", arn),
        (dict(FunctionName=arn), "$LATEST", "v2", arn),
        (dict(FunctionName=f"{account}:function:{name}"), "$LATEST", "v2", arn),
        (dict(FunctionName=f"{name}:live"), "1", "v1", f"{arn}:live"),
        (dict(FunctionName=f"{arn}:live"), "1", "v1", f"{arn}:live"),
        (dict(FunctionName=f"{account}:function:{name}:2"), "2", "v2", f"{arn}:2"),
        (dict(FunctionName=f"{name}:1"), "1", "v1", f"{arn}:1"),
        (dict(FunctionName=name, Qualifier="live"), "1", "v1", f"{arn}:live"),
        (dict(FunctionName=arn, Qualifier="2"), "2", "v2", f"{arn}:2"),
    ]
    for kwargs, version, tag, invoked_arn in cases:
        resp, out = invoke_json(lambda_client, Payload={"k": "v"}, **kwargs)
        assert resp["StatusCode"] == 200, kwargs
        assert resp["ExecutedVersion"] == version, kwargs
        assert out["tag"] == tag, kwargs
        assert out["event"] == {"k": "v"}, kwargs
        assert out["invoked_arn"] == invoked_arn, kwargs


def test_invoke_missing_qualifier_is_not_found(lambda_client, make_function):
    name = make_function()["FunctionName"]
    for kwargs in (dict(FunctionName=name, Qualifier="7"), dict(FunctionName=f"{name}:nope")):
        with pytest.raises(lambda_client.exceptions.ResourceNotFoundException) as e:
            lambda_client.invoke(Payload=b"{}", **kwargs)
        assert_client_error(e, "ResourceNotFoundException", 404)


def test_invoke_dry_run_returns_204(lambda_client, make_function):
    name = make_function()["FunctionName"]
    resp = lambda_client.invoke(FunctionName=name, InvocationType="DryRun", Payload=b"{}")
    assert resp["StatusCode"] == 204
    assert resp["Payload"].read() == b""
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.invoke(FunctionName=unique_name("nope"), InvocationType="DryRun")


def test_invoke_function_error_is_unhandled(lambda_client, make_function):
    name = make_function()["FunctionName"]
    resp, out = invoke_json(lambda_client, FunctionName=name, Payload={"fail": "boom"})
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "ValueError"
    assert "asked to fail: boom" in out["errorMessage"]
    ok, _ = invoke_json(lambda_client, FunctionName=name, Payload={})
    assert "FunctionError" not in ok


def test_invoke_log_type_tail(lambda_client, make_function):
    name = make_function()["FunctionName"]
    resp = lambda_client.invoke(FunctionName=name, LogType="Tail", Payload=b"{}")
    assert resp["StatusCode"] == 200
    log = base64.b64decode(resp["LogResult"]).decode()
    assert len(base64.b64decode(resp["LogResult"])) <= 4096
    assert "START RequestId:" in log, log
    assert "handler-log-line tag=v1" in log, log
    assert "END RequestId:" in log, log
    assert "REPORT RequestId:" in log, log
    plain = lambda_client.invoke(FunctionName=name, Payload=b"{}")
    assert "LogResult" not in plain


def test_invoke_body_not_json_is_invalid_request_content(lambda_client, make_function):
    name = make_function()["FunctionName"]
    with pytest.raises(lambda_client.exceptions.InvalidRequestContentException) as e:
        lambda_client.invoke(FunctionName=name, Payload=b"{not json")
    assert_client_error(e, "InvalidRequestContentException", 400)


def test_invoke_payload_over_6mb_is_request_too_large(lambda_client, make_function):
    name = make_function()["FunctionName"]
    payload = json.dumps({"blob": "x" * (6 * 1024 * 1024 + 1024)}).encode()
    with pytest.raises(lambda_client.exceptions.RequestTooLargeException) as e:
        lambda_client.invoke(FunctionName=name, Payload=payload)
    assert_client_error(e, "RequestTooLargeException", 413)


# --------------------------------------------------------------------------------------------
# Reserved concurrency
# --------------------------------------------------------------------------------------------

def test_reserved_concurrency_zero_throttles(lambda_client, make_function):
    name = make_function()["FunctionName"]
    put = lambda_client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    assert http_status(put) == 200
    assert put["ReservedConcurrentExecutions"] == 0
    assert lambda_client.get_function_concurrency(FunctionName=name)[
        "ReservedConcurrentExecutions"] == 0
    assert lambda_client.get_function(FunctionName=name)["Concurrency"] == {
        "ReservedConcurrentExecutions": 0}

    with pytest.raises(lambda_client.exceptions.TooManyRequestsException) as e:
        lambda_client.invoke(FunctionName=name, Payload=b"{}")
    assert_client_error(e, "TooManyRequestsException", 429)
    assert e.value.response.get("Reason") == "ReservedFunctionConcurrentInvocationLimitExceeded", \
        e.value.response
    assert "retry-after" in e.value.response["ResponseMetadata"]["HTTPHeaders"]

    deleted = lambda_client.delete_function_concurrency(FunctionName=name)
    assert http_status(deleted) == 204
    got = lambda_client.get_function_concurrency(FunctionName=name)
    assert "ReservedConcurrentExecutions" not in got
    resp, out = invoke_json(lambda_client, FunctionName=name, Payload={})
    assert resp["StatusCode"] == 200 and out["tag"] == "v1"


def test_reserved_concurrency_counts_against_unreserved(lambda_client, make_function):
    name = make_function()["FunctionName"]
    limits = lambda_client.get_account_settings()["AccountLimit"]
    before = limits["UnreservedConcurrentExecutions"]
    lambda_client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
    after = lambda_client.get_account_settings()["AccountLimit"]
    assert after["UnreservedConcurrentExecutions"] == before - 5
    # Reserving the whole account would leave nothing unreserved: Lambda refuses.
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException) as e:
        lambda_client.put_function_concurrency(
            FunctionName=name, ReservedConcurrentExecutions=limits["ConcurrentExecutions"])
    assert_client_error(e, "InvalidParameterValueException", 400)
    assert lambda_client.get_function_concurrency(FunctionName=name)[
        "ReservedConcurrentExecutions"] == 5
    lambda_client.delete_function_concurrency(FunctionName=name)
    assert lambda_client.get_account_settings()["AccountLimit"][
        "UnreservedConcurrentExecutions"] == before


def test_reserved_concurrency_positive_allows_invokes(lambda_client, make_function):
    name = make_function()["FunctionName"]
    put = lambda_client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=3)
    assert put["ReservedConcurrentExecutions"] == 3
    resp, _ = invoke_json(lambda_client, FunctionName=name, Payload={})
    assert resp["StatusCode"] == 200


# --------------------------------------------------------------------------------------------
# Function URL config
# --------------------------------------------------------------------------------------------

def test_function_url_config_crud(lambda_client, make_function):
    created = make_function()
    name = created["FunctionName"]
    url = lambda_client.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert http_status(url) == 201
    assert url["FunctionUrl"].startswith(("http://", "https://"))
    assert url["FunctionUrl"].endswith("/")
    assert url["AuthType"] == "NONE"
    assert url["FunctionArn"] == created["FunctionArn"]
    assert url["CreationTime"]

    with pytest.raises(lambda_client.exceptions.ResourceConflictException) as e:
        lambda_client.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert_client_error(e, "ResourceConflictException", 409)

    got = lambda_client.get_function_url_config(FunctionName=name)
    assert http_status(got) == 200
    assert (got["FunctionUrl"], got["AuthType"]) == (url["FunctionUrl"], "NONE")

    cors = {"AllowOrigins": ["https://example.com"], "AllowMethods": ["GET"], "MaxAge": 60}
    upd = lambda_client.update_function_url_config(FunctionName=name, Cors=cors)
    assert http_status(upd) == 200
    assert upd["AuthType"] == "NONE", "fields not sent keep their values"
    assert upd["Cors"]["AllowOrigins"] == ["https://example.com"]
    assert upd["Cors"]["MaxAge"] == 60
    assert upd["FunctionUrl"] == url["FunctionUrl"]
    assert upd["LastModifiedTime"]
    assert lambda_client.get_function_url_config(FunctionName=name)["Cors"]["AllowOrigins"] == [
        "https://example.com"]

    deleted = lambda_client.delete_function_url_config(FunctionName=name)
    assert http_status(deleted) == 204
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException) as e:
        lambda_client.get_function_url_config(FunctionName=name)
    assert_client_error(e, "ResourceNotFoundException", 404)


def test_function_url_config_auth_type_aws_iam(lambda_client, make_function):
    """AWS_IAM is a valid AuthType for create and update."""
    name = make_function()["FunctionName"]
    created = lambda_client.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")
    assert created["AuthType"] == "AWS_IAM"
    upd = lambda_client.update_function_url_config(FunctionName=name, AuthType="NONE")
    assert upd["AuthType"] == "NONE"
    upd = lambda_client.update_function_url_config(FunctionName=name, AuthType="AWS_IAM")
    assert upd["AuthType"] == "AWS_IAM"
    assert lambda_client.get_function_url_config(FunctionName=name)["AuthType"] == "AWS_IAM"


def test_function_url_config_on_an_alias(lambda_client, make_function):
    """boto3's Qualifier: the URL invokes the alias's version, not $LATEST."""
    name = make_function(zip_data=python_zip("one"), Publish=True)["FunctionName"]
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    url = lambda_client.create_function_url_config(
        FunctionName=name, Qualifier="live", AuthType="NONE")
    assert http_status(url) == 201
    assert url["FunctionArn"].endswith(f":function:{name}:live")
    got = lambda_client.get_function_url_config(FunctionName=name, Qualifier="live")
    assert got["FunctionUrl"] == url["FunctionUrl"]
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.get_function_url_config(FunctionName=name)

    lambda_client.update_function_code(FunctionName=name, ZipFile=python_zip("two"))
    wait_updated(lambda_client, name)

    def fetch():
        with urllib.request.urlopen(url["FunctionUrl"], timeout=30) as r:
            return json.loads(r.read())["tag"]

    assert fetch() == "one"
    v2 = lambda_client.publish_version(FunctionName=name)["Version"]
    lambda_client.update_alias(FunctionName=name, Name="live", FunctionVersion=v2)
    assert fetch() == "two"
    assert http_status(lambda_client.delete_function_url_config(
        FunctionName=name, Qualifier="live")) == 204


def test_function_url_serves_http_requests(lambda_client, make_function):
    name = make_function()["FunctionName"]
    url = lambda_client.create_function_url_config(FunctionName=name, AuthType="NONE")[
        "FunctionUrl"]
    with urllib.request.urlopen(url.rstrip("/") + "/hello?x=1", timeout=30) as r:
        assert r.status == 200
        out = json.loads(r.read())
    assert out["tag"] == "v1"
    assert out["event"]["rawPath"] == "/hello"
    assert out["event"]["rawQueryString"] == "x=1"
    assert out["event"]["requestContext"]["http"]["method"] == "GET"


def test_function_url_config_bad_auth_type_and_missing_function(raw_client, make_function):
    name = make_function()["FunctionName"]
    with pytest.raises(raw_client.exceptions.InvalidParameterValueException) as e:
        raw_client.create_function_url_config(FunctionName=name, AuthType="BASIC")
    assert_client_error(e, "InvalidParameterValueException", 400)
    with pytest.raises(raw_client.exceptions.ResourceNotFoundException) as e:
        raw_client.create_function_url_config(FunctionName=unique_name("nope"), AuthType="NONE")
    assert_client_error(e, "ResourceNotFoundException", 404)


# --------------------------------------------------------------------------------------------
# Account settings, tags, permissions
# --------------------------------------------------------------------------------------------

def test_get_account_settings(lambda_client, make_function):
    before = lambda_client.get_account_settings()
    assert http_status(before) == 200
    limit = before["AccountLimit"]
    for key in ("TotalCodeSize", "CodeSizeUnzipped", "CodeSizeZipped", "ConcurrentExecutions"):
        assert isinstance(limit[key], int) and limit[key] > 0, key
    assert 0 <= limit["UnreservedConcurrentExecutions"] <= limit["ConcurrentExecutions"]
    zip_data = python_zip("acct")
    make_function(zip_data=zip_data)
    after = lambda_client.get_account_settings()["AccountUsage"]
    assert after["FunctionCount"] == before["AccountUsage"]["FunctionCount"] + 1
    assert after["TotalCodeSize"] >= before["AccountUsage"]["TotalCodeSize"] + len(zip_data)


def test_tags(lambda_client, make_function):
    created = make_function(Tags={"team": "core"})
    arn = created["FunctionArn"]
    assert lambda_client.list_tags(Resource=arn)["Tags"] == {"team": "core"}
    tagged = lambda_client.tag_resource(Resource=arn, Tags={"env": "dev", "owner": "me"})
    assert http_status(tagged) == 204
    assert lambda_client.list_tags(Resource=arn)["Tags"] == {
        "team": "core", "env": "dev", "owner": "me"}
    assert lambda_client.get_function(FunctionName=created["FunctionName"])["Tags"] == {
        "team": "core", "env": "dev", "owner": "me"}
    untagged = lambda_client.untag_resource(Resource=arn, TagKeys=["team", "owner"])
    assert http_status(untagged) == 204
    assert lambda_client.list_tags(Resource=arn)["Tags"] == {"env": "dev"}
    missing = arn.rsplit(":", 1)[0] + ":" + unique_name("nope")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException) as e:
        lambda_client.list_tags(Resource=missing)
    assert_client_error(e, "ResourceNotFoundException", 404)


def test_permissions_and_policy(lambda_client, make_function):
    created = make_function()
    name, arn = created["FunctionName"], created["FunctionArn"]
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException) as e:
        lambda_client.get_policy(FunctionName=name)
    assert_client_error(e, "ResourceNotFoundException", 404)

    added = lambda_client.add_permission(
        FunctionName=name, StatementId="s3-invoke", Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com", SourceArn="arn:aws:s3:::my-bucket")
    assert http_status(added) == 201
    stmt = json.loads(added["Statement"])
    assert stmt["Sid"] == "s3-invoke"
    assert stmt["Effect"] == "Allow"
    assert stmt["Action"] == "lambda:InvokeFunction"
    assert stmt["Resource"] == arn
    assert stmt["Principal"] == {"Service": "s3.amazonaws.com"}
    assert stmt["Condition"] == {"ArnLike": {"AWS:SourceArn": "arn:aws:s3:::my-bucket"}}

    lambda_client.add_permission(
        FunctionName=name, StatementId="url", Action="lambda:InvokeFunctionUrl",
        Principal="*", FunctionUrlAuthType="NONE")
    with pytest.raises(lambda_client.exceptions.ResourceConflictException) as e:
        lambda_client.add_permission(FunctionName=name, StatementId="s3-invoke",
                                     Action="lambda:InvokeFunction", Principal="s3.amazonaws.com")
    assert_client_error(e, "ResourceConflictException", 409)

    pol = lambda_client.get_policy(FunctionName=name)
    assert http_status(pol) == 200
    assert pol["RevisionId"]
    doc = json.loads(pol["Policy"])
    assert doc["Version"] == "2012-10-17"
    assert sorted(s["Sid"] for s in doc["Statement"]) == ["s3-invoke", "url"]

    removed = lambda_client.remove_permission(FunctionName=name, StatementId="s3-invoke")
    assert http_status(removed) == 204
    doc = json.loads(lambda_client.get_policy(FunctionName=name)["Policy"])
    assert [s["Sid"] for s in doc["Statement"]] == ["url"]
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException) as e:
        lambda_client.remove_permission(FunctionName=name, StatementId="s3-invoke")
    assert_client_error(e, "ResourceNotFoundException", 404)
    lambda_client.remove_permission(FunctionName=name, StatementId="url")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.get_policy(FunctionName=name)


# --------------------------------------------------------------------------------------------
# DeleteFunction
# --------------------------------------------------------------------------------------------

def test_delete_function_with_qualifier_then_whole(lambda_client, two_versions):
    name = two_versions["FunctionName"]
    resp = lambda_client.delete_function(FunctionName=name, Qualifier="1")
    assert http_status(resp) in (200, 204)
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException) as e:
        lambda_client.get_function_configuration(FunctionName=name, Qualifier="1")
    assert_client_error(e, "ResourceNotFoundException", 404)
    versions = [v["Version"] for v in lambda_client.list_versions_by_function(
        FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "2"]
    # Version numbers are never reused.
    lambda_client.update_function_code(FunctionName=name, ZipFile=python_zip("v3"))
    wait_updated(lambda_client, name)
    assert lambda_client.publish_version(FunctionName=name)["Version"] == "3"

    # A version an alias points at cannot be deleted.
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="2")
    with pytest.raises(lambda_client.exceptions.ResourceConflictException) as e:
        lambda_client.delete_function(FunctionName=name, Qualifier="2")
    assert_client_error(e, "ResourceConflictException", 409)
    assert lambda_client.get_function_configuration(FunctionName=name, Qualifier="2")[
        "Version"] == "2"

    # $LATEST cannot be deleted on its own.
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException) as e:
        lambda_client.delete_function(FunctionName=name, Qualifier="$LATEST")
    assert_client_error(e, "InvalidParameterValueException", 400)
    assert lambda_client.get_function(FunctionName=name)["Configuration"]["Version"] == "$LATEST"

    resp = lambda_client.delete_function(FunctionName=name)
    assert http_status(resp) in (200, 204)
    for kwargs in (dict(FunctionName=name), dict(FunctionName=name, Qualifier="2")):
        with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
            lambda_client.get_function(**kwargs)
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.invoke(FunctionName=name, Payload=b"{}")
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException):
        lambda_client.delete_function(FunctionName=name)


def test_name_can_be_reused_after_delete(lambda_client, make_function):
    name = unique_name("reuse")
    make_function(name=name, zip_data=python_zip("first"))
    lambda_client.delete_function(FunctionName=name)
    make_function(name=name, zip_data=python_zip("second"))
    _, out = invoke_json(lambda_client, FunctionName=name, Payload={})
    assert out["tag"] == "second"
    assert [v["Version"] for v in lambda_client.list_versions_by_function(
        FunctionName=name)["Versions"]] == ["$LATEST"]


# --------------------------------------------------------------------------------------------
# Waiters
# --------------------------------------------------------------------------------------------

def test_waiter_function_active_v2(lambda_client, make_function):
    name = make_function()["FunctionName"]
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=FAST_WAIT)
    lambda_client.get_waiter("function_active").wait(FunctionName=name, WaiterConfig=FAST_WAIT)


def test_waiter_function_updated_v2(lambda_client, make_function):
    name = make_function()["FunctionName"]
    lambda_client.update_function_configuration(FunctionName=name, MemorySize=256)
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=FAST_WAIT)
    lambda_client.update_function_code(FunctionName=name, ZipFile=python_zip("w"))
    lambda_client.get_waiter("function_updated").wait(FunctionName=name, WaiterConfig=FAST_WAIT)
    assert lambda_client.get_function_configuration(FunctionName=name)[
        "LastUpdateStatus"] == "Successful"


def test_waiter_function_exists(lambda_client, make_function):
    name = make_function()["FunctionName"]
    lambda_client.get_waiter("function_exists").wait(FunctionName=name, WaiterConfig=FAST_WAIT)
    # For a missing function the waiter keeps retrying on ResourceNotFoundException (the
    # acceptor matches the error code) until it runs out of attempts.
    with pytest.raises(WaiterError) as e:
        lambda_client.get_waiter("function_exists").wait(
            FunctionName=unique_name("nope"), WaiterConfig={"Delay": 1, "MaxAttempts": 2})
    assert "Max attempts exceeded" in str(e.value), str(e.value)
    assert e.value.last_response["Error"]["Code"] == "ResourceNotFoundException"


def test_waiter_published_version_active(lambda_client, make_function):
    name = make_function()["FunctionName"]
    version = lambda_client.publish_version(FunctionName=name)["Version"]
    lambda_client.get_waiter("published_version_active").wait(
        FunctionName=name, Qualifier=version, WaiterConfig=FAST_WAIT)
    conf = lambda_client.get_function_configuration(FunctionName=name, Qualifier=version)
    assert conf["State"] == "Active"


# --------------------------------------------------------------------------------------------
# Errors: validation, conflicts, missing resources
# --------------------------------------------------------------------------------------------

BAD_CREATE = {
    "name-too-long": dict(FunctionName="f" * 65),
    "name-bad-chars": dict(FunctionName="bad name!"),
    "unknown-runtime": dict(Runtime="cobol85"),
    "retired-runtime": dict(Runtime="python2.7"),
    "memory-64": dict(MemorySize=64),
    "memory-20000": dict(MemorySize=20000),
    "timeout-0": dict(Timeout=0),
    "timeout-1000": dict(Timeout=1000),
    "handler-too-long": dict(Handler="h" * 129),
    "env-key-invalid": dict(Environment={"Variables": {"1BAD-KEY": "x"}}),
    "env-key-reserved": dict(Environment={"Variables": {"AWS_REGION": "eu-west-1"}}),
    "role-not-an-arn": dict(Role="not-a-role"),
    "zip-not-a-zip": dict(Code={"ZipFile": b"this is not a zip file"}),
    "description-too-long": dict(Description="d" * 257),
    "architecture-unknown": dict(Architectures=["sparc"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CREATE))
def test_create_function_bad_parameter(raw_client, case):
    kwargs = dict(FunctionName=unique_name("bad"), Runtime="python3.11", Role=ROLE,
                  Handler="app.handler", Code={"ZipFile": python_zip()})
    kwargs.update(BAD_CREATE[case])
    with pytest.raises(raw_client.exceptions.InvalidParameterValueException) as e:
        raw_client.create_function(**kwargs)
    assert_client_error(e, "InvalidParameterValueException", 400)
    # Nothing was created.
    listed = {f["FunctionName"] for p in raw_client.get_paginator("list_functions").paginate()
              for f in p["Functions"]}
    assert kwargs["FunctionName"] not in listed


BAD_UPDATE = {
    "memory-64": dict(MemorySize=64),
    "memory-20000": dict(MemorySize=20000),
    "timeout-0": dict(Timeout=0),
    "timeout-1000": dict(Timeout=1000),
    "handler-too-long": dict(Handler="h" * 129),
    "unknown-runtime": dict(Runtime="cobol85"),
    "env-key-invalid": dict(Environment={"Variables": {"1BAD-KEY": "x"}}),
}


@pytest.mark.parametrize("case", sorted(BAD_UPDATE))
def test_update_function_configuration_bad_parameter(raw_client, make_function, case):
    created = make_function()
    name = created["FunctionName"]
    with pytest.raises(raw_client.exceptions.InvalidParameterValueException) as e:
        raw_client.update_function_configuration(FunctionName=name, **BAD_UPDATE[case])
    assert_client_error(e, "InvalidParameterValueException", 400)
    conf = raw_client.get_function_configuration(FunctionName=name)
    assert conf["RevisionId"] == created["RevisionId"], "a rejected update changed the function"


def test_put_function_concurrency_negative_is_invalid(raw_client, make_function):
    name = make_function()["FunctionName"]
    with pytest.raises(raw_client.exceptions.InvalidParameterValueException) as e:
        raw_client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=-1)
    assert_client_error(e, "InvalidParameterValueException", 400)


def test_invalid_parameter_error_shape_and_message(raw_client):
    with pytest.raises(raw_client.exceptions.InvalidParameterValueException) as e:
        raw_client.create_function(FunctionName=unique_name("bad"), Runtime="python3.11",
                                   Role=ROLE, Handler="app.handler",
                                   Code={"ZipFile": python_zip()}, MemorySize=64)
    assert_client_error(e, "InvalidParameterValueException", 400)
    msg = e.value.response["Error"]["Message"]
    assert "MemorySize" in msg or "memory" in msg.lower(), f"message should name the field: {msg}"


def test_duplicate_function_is_conflict(lambda_client, make_function):
    name = make_function()["FunctionName"]
    with pytest.raises(lambda_client.exceptions.ResourceConflictException) as e:
        lambda_client.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                                      Handler="app.handler", Code={"ZipFile": python_zip()})
    assert_client_error(e, "ResourceConflictException", 409)


MISSING_CALLS = {
    "get_function": lambda c, n: c.get_function(FunctionName=n),
    "get_function_configuration": lambda c, n: c.get_function_configuration(FunctionName=n),
    "invoke": lambda c, n: c.invoke(FunctionName=n, Payload=b"{}"),
    "update_function_code": lambda c, n: c.update_function_code(FunctionName=n,
                                                                ZipFile=python_zip()),
    "update_function_configuration": lambda c, n: c.update_function_configuration(
        FunctionName=n, MemorySize=256),
    "delete_function": lambda c, n: c.delete_function(FunctionName=n),
    "publish_version": lambda c, n: c.publish_version(FunctionName=n),
    "list_versions_by_function": lambda c, n: c.list_versions_by_function(FunctionName=n),
    "list_aliases": lambda c, n: c.list_aliases(FunctionName=n),
    "create_alias": lambda c, n: c.create_alias(FunctionName=n, Name="a", FunctionVersion="1"),
    "get_alias": lambda c, n: c.get_alias(FunctionName=n, Name="a"),
    "put_function_concurrency": lambda c, n: c.put_function_concurrency(
        FunctionName=n, ReservedConcurrentExecutions=1),
    "get_function_concurrency": lambda c, n: c.get_function_concurrency(FunctionName=n),
    "get_function_url_config": lambda c, n: c.get_function_url_config(FunctionName=n),
    "get_policy": lambda c, n: c.get_policy(FunctionName=n),
    "add_permission": lambda c, n: c.add_permission(
        FunctionName=n, StatementId="s", Action="lambda:InvokeFunction", Principal="*"),
}


@pytest.mark.parametrize("op", sorted(MISSING_CALLS))
def test_missing_function_is_not_found(lambda_client, op):
    with pytest.raises(lambda_client.exceptions.ResourceNotFoundException) as e:
        MISSING_CALLS[op](lambda_client, unique_name("missing"))
    assert_client_error(e, "ResourceNotFoundException", 404)


def test_missing_version_and_alias_are_not_found(lambda_client, make_function):
    name = make_function()["FunctionName"]
    calls = [
        lambda: lambda_client.get_function(FunctionName=name, Qualifier="5"),
        lambda: lambda_client.get_function_configuration(FunctionName=name, Qualifier="nope"),
        lambda: lambda_client.get_alias(FunctionName=name, Name="nope"),
        lambda: lambda_client.delete_alias(FunctionName=name, Name="nope"),
        lambda: lambda_client.update_alias(FunctionName=name, Name="nope", FunctionVersion="1"),
    ]
    for call in calls:
        with pytest.raises(lambda_client.exceptions.ResourceNotFoundException) as e:
            call()
        assert_client_error(e, "ResourceNotFoundException", 404)


def test_unqualified_and_latest_config_report_active_state(lambda_client, make_function):
    """Every FunctionConfiguration the waiters read carries State and LastUpdateStatus."""
    name = make_function()["FunctionName"]
    lambda_client.publish_version(FunctionName=name)
    lambda_client.create_alias(FunctionName=name, Name="cur", FunctionVersion="1")
    deadline = time.monotonic() + 15
    for q in (None, "$LATEST", "1", "cur"):
        kwargs = {"FunctionName": name}
        if q:
            kwargs["Qualifier"] = q
        while True:
            conf = lambda_client.get_function_configuration(**kwargs)
            if conf.get("State") == "Active" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert conf.get("State") == "Active", (q, conf)
        assert conf.get("LastUpdateStatus") == "Successful", (q, conf)
