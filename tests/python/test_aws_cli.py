"""The unmodified AWS CLI (`aws lambda …`) against Nimbus."""

import json
import subprocess

import pytest

from conftest import ROLE, aws_cli, code_sha256, python_zip, unique_name


@pytest.fixture(scope="module")
def aws(nimbus):
    """Runs `aws lambda ARGS --endpoint-url …` and returns (returncode, stdout, stderr)."""
    exe = aws_cli()

    def run(*args, check=True):
        cmd = [exe, "lambda", *args, "--endpoint-url", nimbus.base_url, "--region", "us-east-1",
               "--output", "json"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        if check:
            assert p.returncode == 0, (
                f"{' '.join(args)} failed ({p.returncode}):\n{p.stderr}\n{p.stdout}")
        return p.returncode, p.stdout, p.stderr

    return run


@pytest.fixture
def fn_zip(tmp_path):
    data = python_zip("cli")
    path = tmp_path / "fn.zip"
    path.write_bytes(data)
    return path, data


def test_cli_create_function(aws, fn_zip):
    path, data = fn_zip
    name = unique_name("cli")
    _, out, _ = aws("create-function", "--function-name", name, "--runtime", "python3.11",
                    "--handler", "app.handler", "--role", ROLE,
                    "--zip-file", f"fileb://{path}", "--timeout", "5", "--memory-size", "256",
                    "--environment", "Variables={T_FROM=cli}")
    conf = json.loads(out)
    assert conf["FunctionName"] == name
    assert conf["Runtime"] == "python3.11"
    assert conf["CodeSha256"] == code_sha256(data)
    assert conf["CodeSize"] == len(data)
    assert (conf["Timeout"], conf["MemorySize"]) == (5, 256)
    assert conf["Environment"] == {"Variables": {"T_FROM": "cli"}}
    assert conf["State"] in ("Pending", "Active")
    aws("wait", "function-active-v2", "--function-name", name)
    _, out, _ = aws("get-function", "--function-name", name)
    assert json.loads(out)["Configuration"]["State"] == "Active"


def test_cli_invoke(aws, fn_zip, tmp_path):
    path, _ = fn_zip
    name = unique_name("cli")
    aws("create-function", "--function-name", name, "--runtime", "python3.11",
        "--handler", "app.handler", "--role", ROLE, "--zip-file", f"fileb://{path}",
        "--environment", "Variables={T_FROM=cli}")
    payload = tmp_path / "in.json"
    payload.write_text(json.dumps({"name": "aws"}))
    result = tmp_path / "out.json"
    _, out, _ = aws("invoke", "--function-name", name, "--payload", f"fileb://{payload}",
                    str(result))
    meta = json.loads(out)
    assert meta["StatusCode"] == 200
    assert meta["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in meta
    body = json.loads(result.read_text())
    assert body["tag"] == "cli"
    assert body["event"] == {"name": "aws"}
    assert body["env"] == {"T_FROM": "cli"}

    # Function errors: exit 0, FunctionError in the metadata, the error JSON in the outfile.
    payload.write_text(json.dumps({"fail": "cli"}))
    _, out, _ = aws("invoke", "--function-name", name, "--payload", f"fileb://{payload}",
                    "--log-type", "Tail", str(result))
    meta = json.loads(out)
    assert meta["FunctionError"] == "Unhandled"
    assert meta.get("LogResult")
    assert json.loads(result.read_text())["errorType"] == "ValueError"


def test_cli_list_functions(aws, fn_zip):
    path, _ = fn_zip
    names = [unique_name("clils") for _ in range(3)]
    for name in names:
        aws("create-function", "--function-name", name, "--runtime", "python3.11",
            "--handler", "app.handler", "--role", ROLE, "--zip-file", f"fileb://{path}")
    _, out, _ = aws("list-functions")
    listed = {f["FunctionName"] for f in json.loads(out)["Functions"]}
    assert set(names) <= listed
    # The CLI paginates through Marker/NextMarker on its own; --max-items gives a NextToken.
    _, out, _ = aws("list-functions", "--max-items", "1")
    page = json.loads(out)
    assert len(page["Functions"]) == 1
    assert page.get("NextToken")
    _, out, _ = aws("list-functions", "--page-size", "1")
    assert set(names) <= {f["FunctionName"] for f in json.loads(out)["Functions"]}


def test_cli_errors_are_modeled_exceptions(aws, fn_zip):
    path, _ = fn_zip
    rc, _, err = aws("get-function", "--function-name", unique_name("nope"), check=False)
    assert rc != 0
    assert "ResourceNotFoundException" in err, err
    rc, _, err = aws("create-function", "--function-name", "x" * 65, "--runtime", "python3.11",
                     "--handler", "app.handler", "--role", ROLE,
                     "--zip-file", f"fileb://{path}", check=False)
    assert rc != 0
    assert "InvalidParameterValueException" in err, err
