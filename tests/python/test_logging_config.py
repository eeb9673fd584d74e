"""LoggingConfig through boto3: Lambda's shapes, defaults and validation errors, kept per
version, and applied at run time (JSON platform records and application lines in the
invocation's log tail). Reading logs by time, level and trace id: tests/e2e/logs.rs."""

import base64
import json

import pytest

from conftest import invoke_json, python_zip, unique_name

JSON_APP = """
import logging
logger = logging.getLogger("orders")
logger.setLevel(logging.DEBUG)

def handler(event, context):
    logger.debug("not at INFO")
    logger.info("order %s placed", 7, extra={"orderId": 7})
    print("a plain print line")
    return {"ok": True}
"""


def test_defaults_are_text_in_the_functions_log_group(make_function, lambda_client):
    created = make_function()
    name = created["FunctionName"]
    want = {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}"}
    assert created["LoggingConfig"] == want
    assert lambda_client.get_function_configuration(FunctionName=name)["LoggingConfig"] == want


def test_json_reports_levels_with_their_defaults(make_function, lambda_client):
    created = make_function(LoggingConfig={"LogFormat": "JSON"})
    name = created["FunctionName"]
    want = {"LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "INFO",
            "LogGroup": f"/aws/lambda/{name}"}
    assert created["LoggingConfig"] == want
    got = lambda_client.get_function(FunctionName=name)["Configuration"]["LoggingConfig"]
    assert got == want
    updated = lambda_client.update_function_configuration(
        FunctionName=name,
        LoggingConfig={"ApplicationLogLevel": "WARN", "SystemLogLevel": "DEBUG",
                       "LogGroup": "/teams/orders"})
    assert updated["LoggingConfig"] == {"LogFormat": "JSON", "ApplicationLogLevel": "WARN",
                                        "SystemLogLevel": "DEBUG", "LogGroup": "/teams/orders"}


def test_levels_need_json_and_values_are_lambdas(make_function, raw_client):
    name = unique_name("lvl")
    with pytest.raises(raw_client.exceptions.InvalidParameterValueException) as e:
        raw_client.create_function(
            FunctionName=name, Runtime="python3.11", Role="arn:aws:iam::123456789012:role/r",
            Handler="app.handler", Code={"ZipFile": python_zip()},
            LoggingConfig={"LogFormat": "Text", "ApplicationLogLevel": "DEBUG"})
    assert e.value.response["Error"]["Message"].startswith(
        'LogLevel is not supported when LogFormat is set to "Text".'), e.value.response
    existing = make_function()["FunctionName"]
    for bad, field in [({"LogFormat": "XML"}, "loggingConfig.logFormat"),
                       ({"LogFormat": "JSON", "SystemLogLevel": "ERROR"},
                        "loggingConfig.systemLogLevel"),
                       ({"LogFormat": "JSON", "ApplicationLogLevel": "LOUD"},
                        "loggingConfig.applicationLogLevel"),
                       ({"SystemLogLevel": "WARN"}, "LogFormat is set to")]:
        with pytest.raises(raw_client.exceptions.InvalidParameterValueException) as e:
            raw_client.update_function_configuration(FunctionName=existing, LoggingConfig=bad)
        assert field in e.value.response["Error"]["Message"], (bad, e.value.response)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_kept_per_version_and_text_drops_the_levels(make_function, lambda_client):
    created = make_function(LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "ERROR"},
                            Publish=True)
    name = created["FunctionName"]
    assert created["Version"] == "1"
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name)
    text = lambda_client.update_function_configuration(
        FunctionName=name, LoggingConfig={"LogFormat": "Text"})
    assert text["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}"}
    v1 = lambda_client.get_function_configuration(FunctionName=name, Qualifier="1")
    assert v1["LoggingConfig"]["ApplicationLogLevel"] == "ERROR"
    # Another field leaves the logging configuration alone.
    again = lambda_client.update_function_configuration(FunctionName=name, Timeout=9)
    assert again["LoggingConfig"] == text["LoggingConfig"]


def test_json_format_reaches_the_runtime_and_the_platform_lines(make_function, lambda_client):
    name = make_function(zip_data=python_zip(source=JSON_APP),
                         LoggingConfig={"LogFormat": "JSON"})["FunctionName"]
    resp, body = invoke_json(lambda_client, FunctionName=name, LogType="Tail", Payload={})
    assert body == {"ok": True}
    tail = base64.b64decode(resp["LogResult"]).decode()
    lines = [l for l in tail.splitlines() if l]
    records = [json.loads(l) for l in lines if l.startswith("{")]
    platform = [r for r in records if "type" in r]
    types = [r["type"] for r in platform]
    # A cold start: its init first (DEBUG's platform.runtimeDone is filtered at INFO).
    assert types == ["platform.initStart", "platform.start", "platform.report"], lines
    rid = platform[1]["record"]["requestId"]
    assert rid
    report = records[-1]["record"]
    assert report["requestId"] == rid and report["status"] == "success"
    assert set(report["metrics"]) >= {"durationMs", "billedDurationMs", "memorySizeMB",
                                      "maxMemoryUsedMB"}
    app = [r for r in records if "level" in r]
    assert [(r["level"], r["message"]) for r in app] == [("INFO", "order 7 placed")], lines
    assert app[0]["logger"] == "orders" and app[0]["requestId"] == rid
    assert app[0]["orderId"] == 7
    assert "a plain print line" in lines
    assert not any("not at INFO" in l for l in lines)
