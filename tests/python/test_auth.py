"""boto3 against a server with `--auth on`: the bootstrap admin key (from DATA_DIR/credentials)
creates and invokes a function end to end; a wrong secret is refused with botocore's
`InvalidSignatureException`, an unknown key with `UnrecognizedClientException`."""

import configparser
import json

import botocore.exceptions
import pytest

from conftest import NimbusServer, make_client, nimbus_bin, python_zip, ROLE


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    srv = NimbusServer(nimbus_bin(), tmp_path_factory.mktemp("nimbus-auth"), auth=True)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def bootstrap_key(srv):
    creds = configparser.ConfigParser()
    creds.read(srv.workdir / "data" / "credentials")
    return creds["default"]["aws_access_key_id"], creds["default"]["aws_secret_access_key"]


def test_boto3_with_the_right_key_creates_and_invokes(auth_server):
    key_id, secret = bootstrap_key(auth_server)
    client = make_client(auth_server.base_url, access_key=key_id, secret_key=secret)
    created = client.create_function(
        FunctionName="signed-fn", Runtime="python3.12", Role=ROLE, Handler="app.handler",
        Code={"ZipFile": python_zip("signed")})
    assert created["FunctionName"] == "signed-fn"
    # An ARN in the path (its ':' signed double-encoded, as botocore does) and a qualifier.
    out = client.invoke(FunctionName=created["FunctionArn"], Qualifier="$LATEST",
                        Payload=json.dumps({"k": "v"}).encode())
    assert out["StatusCode"] == 200
    body = json.loads(out["Payload"].read())
    assert body["tag"] == "signed" and body["event"] == {"k": "v"}
    # InvokeWithResponseStream is signed the same way (authorised as lambda:InvokeFunction).
    stream = client.invoke_with_response_stream(FunctionName="signed-fn", Payload=b'{"s": 1}')
    events = list(stream["EventStream"])
    payload = b"".join(e["PayloadChunk"]["Payload"] for e in events if "PayloadChunk" in e)
    assert json.loads(payload)["event"] == {"s": 1}
    assert "InvokeComplete" in events[-1], events
    names = [f["FunctionName"] for f in client.list_functions()["Functions"]]
    assert "signed-fn" in names


def test_boto3_with_a_wrong_secret_or_unknown_key_is_refused(auth_server):
    key_id, secret = bootstrap_key(auth_server)
    wrong = make_client(auth_server.base_url, access_key=key_id, secret_key=secret[::-1])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        wrong.list_functions()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "signature we calculated does not match" in e.value.response["Error"]["Message"]

    unknown = make_client(auth_server.base_url, access_key="AKIAUNKNOWNUNKNOWN00", secret_key=secret)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        unknown.invoke(FunctionName="signed-fn", Payload=b"{}")
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_aws_cli_reads_the_credentials_file(auth_server, tmp_path):
    """`AWS_SHARED_CREDENTIALS_FILE=DATA_DIR/credentials aws lambda …`, as the README says."""
    import os
    import subprocess

    from conftest import aws_cli

    def run(creds_file):
        env = dict(os.environ, AWS_SHARED_CREDENTIALS_FILE=str(creds_file))
        env.pop("AWS_ACCESS_KEY_ID", None)
        env.pop("AWS_SECRET_ACCESS_KEY", None)
        return subprocess.run(
            [aws_cli(), "lambda", "list-functions", "--endpoint-url", auth_server.base_url,
             "--region", "us-east-1", "--output", "json"],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=env)

    p = run(auth_server.workdir / "data" / "credentials")
    assert p.returncode == 0, p.stderr
    assert "Functions" in json.loads(p.stdout)
    bad = tmp_path / "credentials"
    bad.write_text("[default]\naws_access_key_id = AKIAAAAAAAAAAAAAAAAA\n"
                   "aws_secret_access_key = nope\n")
    p = run(bad)
    assert p.returncode != 0
    assert "UnrecognizedClientException" in p.stderr
