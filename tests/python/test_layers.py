"""Lambda layers through unmodified boto3: PublishLayerVersion, Get(ByArn), List, Delete,
the layer version permissions, functions with `Layers`, and what an instance sees at
`/opt` (Lambda's paths on PATH, LD_LIBRARY_PATH, PYTHONPATH and NODE_PATH)."""

import io
import json
import urllib.request
import zipfile

import botocore
import pytest

from conftest import (
    ROLE,
    NimbusServer,
    code_sha256,
    error_code,
    http_status,
    invoke_json,
    make_client,
    nimbus_bin,
    unique_name,
)


def zip_of(files: dict) -> bytes:
    """A zip of {path: text or (text, mode)}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, content in files.items():
            text, mode = content if isinstance(content, tuple) else (content, 0o644)
            info = zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100000 | mode) << 16
            z.writestr(info, text)
    return buf.getvalue()


def publish(client, name, files, runtimes=("python3.11",), **kwargs):
    return client.publish_layer_version(
        LayerName=name,
        Content={"ZipFile": zip_of(files)},
        CompatibleRuntimes=list(runtimes),
        **kwargs,
    )


# What a function reports about its layers: the layer root it sees (from its PYTHONPATH),
# that root's listing, its search paths, which copy of a module two layers both have won,
# and a program from a layer's bin/ found on PATH.
PROBE = r'''import os, subprocess, sys

def handler(event, context):
    import shared, only_a
    opt = os.environ["PYTHONPATH"].split(":")[0].rsplit("/python", 1)[0]
    try:
        with open(os.path.join(opt, "probe-write"), "w") as f:
            f.write("x")
        writable = True
    except OSError:
        writable = False
    tool = subprocess.run(["tool-a"], capture_output=True, text=True)
    return {
        "opt": opt,
        "listing": sorted(os.listdir(opt)),
        "shared": shared.VALUE,
        "only_a": only_a.VALUE,
        "lib": open(os.path.join(opt, "lib", "liba.txt")).read(),
        "PATH": os.environ.get("PATH"),
        "LD_LIBRARY_PATH": os.environ.get("LD_LIBRARY_PATH"),
        "PYTHONPATH": os.environ.get("PYTHONPATH"),
        "sys_path": sys.path,
        "tool": tool.stdout.strip(),
        "writable": writable,
    }
'''

LAYER_A = {
    "python/shared.py": "VALUE = 'from-a'\n",
    "python/only_a.py": "VALUE = 'a-only'\n",
    "bin/tool-a": ("#!/bin/sh\necho tool-a-ran\n", 0o755),
    "lib/liba.txt": "lib-of-a",
}
LAYER_B = {"python/shared.py": "VALUE = 'from-b'\n"}


def sandboxed(nimbus) -> bool:
    with urllib.request.urlopen(nimbus.base_url + "/v1/health", timeout=5) as r:
        health = json.loads(r.read())
    return health.get("isolation", {}).get("level") not in (None, "none")


def test_publish_get_by_arn_list_and_versions(lambda_client):
    name = unique_name("layer")
    data = zip_of({"python/mod.py": "X = 1\n"})
    first = lambda_client.publish_layer_version(
        LayerName=name,
        Description="deps",
        Content={"ZipFile": data},
        CompatibleRuntimes=["python3.11", "python3.12"],
        CompatibleArchitectures=["x86_64"],
        LicenseInfo="MIT",
    )
    assert http_status(first) == 201
    assert first["Version"] == 1
    assert first["LayerArn"] == f"arn:aws:lambda:us-east-1:000000000000:layer:{name}"
    assert first["LayerVersionArn"] == first["LayerArn"] + ":1"
    assert first["Content"]["CodeSha256"] == code_sha256(data)
    assert first["Content"]["CodeSize"] == len(data)
    assert first["CompatibleRuntimes"] == ["python3.11", "python3.12"]
    assert first["LicenseInfo"] == "MIT" and first["Description"] == "deps"
    with urllib.request.urlopen(first["Content"]["Location"], timeout=5) as r:
        assert r.read() == data

    second = publish(lambda_client, name, {"nodejs/node_modules/m/index.js": "1"},
                     runtimes=["nodejs20.x"])
    assert second["Version"] == 2

    got = lambda_client.get_layer_version(LayerName=name, VersionNumber=1)
    assert got["LayerVersionArn"] == first["LayerVersionArn"]
    assert got["Content"]["CodeSha256"] == code_sha256(data)
    by_arn = lambda_client.get_layer_version_by_arn(Arn=second["LayerVersionArn"])
    assert by_arn["Version"] == 2 and by_arn["CompatibleRuntimes"] == ["nodejs20.x"]

    versions = lambda_client.list_layer_versions(LayerName=name)["LayerVersions"]
    assert [v["Version"] for v in versions] == [2, 1]
    py = lambda_client.list_layer_versions(LayerName=name, CompatibleRuntime="python3.12")
    assert [v["Version"] for v in py["LayerVersions"]] == [1]
    page = lambda_client.list_layer_versions(LayerName=name, MaxItems=1)
    assert [v["Version"] for v in page["LayerVersions"]] == [2]
    rest = lambda_client.list_layer_versions(LayerName=name, Marker=page["NextMarker"])
    assert [v["Version"] for v in rest["LayerVersions"]] == [1]

    layers = {l["LayerName"]: l for l in lambda_client.list_layers()["Layers"]}
    assert layers[name]["LatestMatchingVersion"]["Version"] == 2
    assert layers[name]["LayerArn"] == first["LayerArn"]
    matching = {l["LayerName"]: l for l in
                lambda_client.list_layers(CompatibleRuntime="python3.11")["Layers"]}
    assert matching[name]["LatestMatchingVersion"]["Version"] == 1

    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.get_layer_version(LayerName=name, VersionNumber=9)
    assert error_code(e.value) == "ResourceNotFoundException"
    assert http_status(e.value) == 404


def test_two_layers_override_a_file_and_paths_are_lambdas(nimbus, lambda_client, make_function):
    a = publish(lambda_client, unique_name("la"), LAYER_A)
    b = publish(lambda_client, unique_name("lb"), LAYER_B)
    fn = make_function(zip_data=zip_of({"app.py": PROBE}),
                       Layers=[a["LayerVersionArn"], b["LayerVersionArn"]])
    assert fn["Layers"] == [
        {"Arn": a["LayerVersionArn"], "CodeSize": a["Content"]["CodeSize"]},
        {"Arn": b["LayerVersionArn"], "CodeSize": b["Content"]["CodeSize"]},
    ]
    cfg = lambda_client.get_function(FunctionName=fn["FunctionName"])["Configuration"]
    assert [l["Arn"] for l in cfg["Layers"]] == [a["LayerVersionArn"], b["LayerVersionArn"]]

    resp, out = invoke_json(lambda_client, FunctionName=fn["FunctionName"], Payload={})
    assert "FunctionError" not in resp, out
    opt = out["opt"]
    if sandboxed(nimbus):
        assert opt == "/opt"
    assert out["shared"] == "from-b", "the later layer wins"
    assert out["only_a"] == "a-only"
    assert out["listing"] == ["bin", "lib", "python"]
    assert out["lib"] == "lib-of-a"
    assert out["tool"] == "tool-a-ran"
    assert out["writable"] is False, "/opt is read-only"
    assert out["PATH"].split(":")[-1] == f"{opt}/bin"
    assert f"{opt}/lib" in out["LD_LIBRARY_PATH"].split(":")
    assert out["PYTHONPATH"].split(":") == [
        f"{opt}/python", f"{opt}/python/lib/python3.11/site-packages"]
    assert f"{opt}/python" in out["sys_path"]
    assert f"{opt}/python/lib/python3.11/site-packages" in out["sys_path"]

    # A second, warm or cold, invocation sees the same; dropping the layers removes them.
    lambda_client.update_function_configuration(
        FunctionName=fn["FunctionName"], Layers=[b["LayerVersionArn"]])
    cfg = lambda_client.get_function_configuration(FunctionName=fn["FunctionName"])
    assert [l["Arn"] for l in cfg["Layers"]] == [b["LayerVersionArn"]]


def test_node_layer_on_node_path(nimbus, lambda_client, make_function):
    layer = publish(lambda_client, unique_name("ln"), {
        "nodejs/node_modules/greet/index.js": "exports.hi = (n) => 'hi ' + n;\n",
        "nodejs/node20/node_modules/versioned/index.js": "exports.v = 'node20';\n",
    }, runtimes=["nodejs20.x"])
    src = """const path = require('path');
exports.handler = async () => ({
  greet: require('greet').hi('layer'),
  versioned: require('versioned').v,
  nodePath: process.env.NODE_PATH,
});
"""
    fn = make_function(zip_data=zip_of({"index.js": src}), runtime="nodejs20.x",
                       handler="index.handler", Layers=[layer["LayerVersionArn"]])
    resp, out = invoke_json(lambda_client, FunctionName=fn["FunctionName"], Payload={})
    assert "FunctionError" not in resp, out
    assert out["greet"] == "hi layer" and out["versioned"] == "node20"
    parts = out["nodePath"].split(":")
    assert parts[0].endswith("/nodejs/node20/node_modules")
    assert parts[1].endswith("/nodejs/node_modules")
    if sandboxed(nimbus):
        assert parts == ["/opt/nodejs/node20/node_modules", "/opt/nodejs/node_modules"]


def test_refusals(lambda_client, make_function):
    small = {"python/x.py": "X = 1\n"}
    arns = [publish(lambda_client, unique_name("l6"), small)["LayerVersionArn"] for _ in range(6)]

    def refused(code="InvalidParameterValueException", **kwargs):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            make_function(**kwargs)
        assert error_code(e.value) == code, e.value.response
        return e.value.response["Error"]["Message"]

    assert "more than 5 layers" in refused(Layers=arns)
    unknown = "arn:aws:lambda:us-east-1:000000000000:layer:no-such-layer:1"
    assert "does not exist" in refused(Layers=[unknown])
    node_only = publish(lambda_client, unique_name("lnode"), small, runtimes=["nodejs20.x"])
    assert "not compatible" in refused(Layers=[node_only["LayerVersionArn"]])

    fn = make_function(Layers=arns[:5])
    assert len(fn["Layers"]) == 5
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.update_function_configuration(
            FunctionName=fn["FunctionName"], Layers=[unknown])
    assert error_code(e.value) == "InvalidParameterValueException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.update_function_configuration(
            FunctionName=fn["FunctionName"], Runtime="nodejs20.x", Handler="index.handler")
    assert error_code(e.value) == "InvalidParameterValueException"

    # Bad layer zips are refused at publish.
    for bad in (zip_of({"../escape.py": "X = 1\n"}), b"not a zip"):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            lambda_client.publish_layer_version(LayerName=unique_name("bad"),
                                                Content={"ZipFile": bad})
        assert error_code(e.value) == "InvalidParameterValueException", e.value.response
    # Over the 250 MB unzipped limit (a zip bomb of zeros).
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("python/zeros.bin", "w", force_zip64=True) as f:
            chunk = b"\0" * (1 << 20)
            for _ in range(251):
                f.write(chunk)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.publish_layer_version(LayerName=unique_name("big"),
                                            Content={"ZipFile": buf.getvalue()})
    assert error_code(e.value) == "InvalidParameterValueException"
    assert "250" in e.value.response["Error"]["Message"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.publish_layer_version(LayerName="bad/name", Content={"ZipFile": b"x"})
    assert error_code(e.value) == "InvalidParameterValueException"


def test_permissions_add_get_remove(lambda_client):
    layer = publish(lambda_client, unique_name("lp"), {"python/x.py": "X = 1\n"})
    name, version = layer["LayerArn"].rsplit(":", 1)[1], layer["Version"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.get_layer_version_policy(LayerName=name, VersionNumber=version)
    assert error_code(e.value) == "ResourceNotFoundException"

    added = lambda_client.add_layer_version_permission(
        LayerName=name, VersionNumber=version, StatementId="xaccount",
        Action="lambda:GetLayerVersion", Principal="210987654321")
    assert http_status(added) == 201
    statement = json.loads(added["Statement"])
    assert statement == {
        "Sid": "xaccount",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
        "Action": "lambda:GetLayerVersion",
        "Resource": layer["LayerVersionArn"],
    }
    everyone = lambda_client.add_layer_version_permission(
        LayerName=name, VersionNumber=version, StatementId="public",
        Action="lambda:GetLayerVersion", Principal="*", OrganizationId="o-abc123",
        RevisionId=added["RevisionId"])
    assert json.loads(everyone["Statement"])["Condition"] == {
        "StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}

    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.add_layer_version_permission(
            LayerName=name, VersionNumber=version, StatementId="xaccount",
            Action="lambda:GetLayerVersion", Principal="*")
    assert error_code(e.value) == "ResourceConflictException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.add_layer_version_permission(
            LayerName=name, VersionNumber=version, StatementId="other",
            Action="lambda:GetLayerVersion", Principal="*", RevisionId=added["RevisionId"])
    assert error_code(e.value) == "PreconditionFailedException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.add_layer_version_permission(
            LayerName=name, VersionNumber=version, StatementId="bad",
            Action="lambda:InvokeFunction", Principal="*")
    assert error_code(e.value) == "InvalidParameterValueException"

    policy = lambda_client.get_layer_version_policy(LayerName=name, VersionNumber=version)
    assert policy["RevisionId"] == everyone["RevisionId"]
    doc = json.loads(policy["Policy"])
    assert [s["Sid"] for s in doc["Statement"]] == ["xaccount", "public"]

    resp = lambda_client.remove_layer_version_permission(
        LayerName=name, VersionNumber=version, StatementId="xaccount")
    assert http_status(resp) == 204
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.remove_layer_version_permission(
            LayerName=name, VersionNumber=version, StatementId="xaccount")
    assert error_code(e.value) == "ResourceNotFoundException"
    doc = json.loads(lambda_client.get_layer_version_policy(
        LayerName=name, VersionNumber=version)["Policy"])
    assert [s["Sid"] for s in doc["Statement"]] == ["public"]


def test_deleted_layer_version_keeps_serving_its_functions_across_a_restart(tmp_path):
    server = NimbusServer(nimbus_bin(), tmp_path)
    server.start()
    try:
        client = make_client(server.base_url)
        name = unique_name("ld")
        layer = publish(client, name, LAYER_A)
        fn = unique_name("uses-deleted")
        src = "import shared\n\ndef handler(event, context):\n    return shared.VALUE\n"
        client.create_function(FunctionName=fn, Runtime="python3.11", Role=ROLE,
                               Handler="app.handler", Code={"ZipFile": zip_of({"app.py": src})},
                               Layers=[layer["LayerVersionArn"]], Publish=True)
        assert invoke_json(client, FunctionName=fn)[1] == "from-a"

        resp = client.delete_layer_version(LayerName=name, VersionNumber=1)
        assert http_status(resp) == 204
        # Deleting again is no error, as on Lambda.
        client.delete_layer_version(LayerName=name, VersionNumber=1)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client.get_layer_version(LayerName=name, VersionNumber=1)
        assert error_code(e.value) == "ResourceNotFoundException"
        # Still served, also by a new instance of the published version.
        assert invoke_json(client, FunctionName=fn)[1] == "from-a"
        assert invoke_json(client, FunctionName=fn, Qualifier="1")[1] == "from-a"
        # New functions cannot use it.
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client.create_function(FunctionName=unique_name(), Runtime="python3.11", Role=ROLE,
                                   Handler="app.handler",
                                   Code={"ZipFile": zip_of({"app.py": src})},
                                   Layers=[layer["LayerVersionArn"]])
        assert error_code(e.value) == "InvalidParameterValueException"

        server.stop()
        server.start()
        client = make_client(server.base_url)
        assert invoke_json(client, FunctionName=fn)[1] == "from-a"
        assert invoke_json(client, FunctionName=fn, Qualifier="1")[1] == "from-a"
        # The deleted version's number is not reused.
        assert publish(client, name, LAYER_B)["Version"] == 2
    finally:
        server.stop()
