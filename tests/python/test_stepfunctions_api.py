"""The Step Functions API (issue 17): unmodified boto3 `stepfunctions` and the AWS CLI
against `nimbus serve` (JSON 1.0 at `POST /`, `X-Amz-Target: AWSStepFunctions.*`).

One test per operation family, the AWS error codes, a Pass-only machine run through
StartExecution and StartSyncExecution, history paging in both orders, the task token
callback pattern through a real function, and `states:*` authorisation with `--auth on`.

Run: python3 -m pytest tests/python/test_stepfunctions_api.py -q
"""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import boto3
import botocore
import pytest
from botocore.config import Config

from conftest import (
    ACCESS_KEY,
    ACCOUNT,
    REGION,
    ROLE,
    SECRET_KEY,
    NimbusServer,
    aws_cli,
    error_code,
    nimbus_bin,
    python_zip,
    unique_name,
)

# StartSyncExecution has the `sync-` host prefix: botocore would send it to
# `sync-127.0.0.1`, which does not resolve.
os.environ["AWS_DISABLE_HOST_PREFIX_INJECTION"] = "true"

PASS = {"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": {"ok": True},
                                         "ResultPath": "$.result", "End": True}}}
WAIT = {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 2, "Next": "Done"},
                                   "Done": {"Type": "Succeed"}}}
FAIL = {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Boom", "Cause": "it broke"}}}


def sfn_client(url, key_id=ACCESS_KEY, secret=SECRET_KEY):
    session = boto3.session.Session(
        aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=REGION)
    return session.client("stepfunctions", endpoint_url=url, config=Config(
        retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5,
        read_timeout=120))


@pytest.fixture(scope="module")
def sfn(nimbus):
    return sfn_client(nimbus.base_url)


@pytest.fixture
def machine(sfn):
    """Factory: creates a state machine, deletes it when the test ends."""
    made = []

    def create(definition=PASS, kind="STANDARD", name=None, **kwargs):
        text = definition if isinstance(definition, str) else json.dumps(definition)
        arn = sfn.create_state_machine(name=name or unique_name("sm"), definition=text,
                                       roleArn=ROLE, type=kind, **kwargs)["stateMachineArn"]
        made.append(arn)
        return arn

    yield create
    for arn in made:
        try:
            sfn.delete_state_machine(stateMachineArn=arn)
        except botocore.exceptions.ClientError:
            pass


def machine_arn(name):
    return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"


def wait_done(sfn, arn, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        desc = sfn.describe_execution(executionArn=arn)
        if desc["status"] != "RUNNING":
            return desc
        assert time.monotonic() < deadline, f"still RUNNING: {desc}"
        time.sleep(0.05)


def expect_error(code, fn, *args, **kwargs):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fn(*args, **kwargs)
    assert error_code(e.value) == code, e.value.response
    return e.value.response["Error"].get("Message", "")


# --------------------------------------------------------------------------------------------
# State machines
# --------------------------------------------------------------------------------------------

def test_state_machine_lifecycle(sfn, machine):
    name = unique_name("sm")
    text = json.dumps(PASS)
    arn = machine(PASS, name=name, tags=[{"key": "team", "value": "a"}])
    assert arn == machine_arn(name)
    # An identical create is idempotent; another definition under the name is refused.
    again = sfn.create_state_machine(name=name, definition=text, roleArn=ROLE, type="STANDARD",
                                     tags=[{"key": "team", "value": "a"}])
    assert again["stateMachineArn"] == arn
    expect_error("StateMachineAlreadyExists", sfn.create_state_machine, name=name,
                 definition=json.dumps(WAIT), roleArn=ROLE)

    desc = sfn.describe_state_machine(stateMachineArn=arn)
    assert (desc["name"], desc["status"], desc["type"], desc["roleArn"]) == (
        name, "ACTIVE", "STANDARD", ROLE)
    assert json.loads(desc["definition"]) == PASS
    assert desc["creationDate"].timestamp() == pytest.approx(time.time(), abs=60)
    assert desc["loggingConfiguration"]["level"] == "OFF"
    first_revision = desc["revisionId"]

    listed = sfn.list_state_machines()["stateMachines"]
    assert any(m["stateMachineArn"] == arn and m["type"] == "STANDARD" for m in listed)

    updated = sfn.update_state_machine(stateMachineArn=arn, definition=json.dumps(WAIT))
    assert updated["revisionId"] != first_revision
    assert json.loads(sfn.describe_state_machine(stateMachineArn=arn)["definition"]) == WAIT
    expect_error("MissingRequiredParameter", sfn.update_state_machine, stateMachineArn=arn)

    sfn.delete_state_machine(stateMachineArn=arn)
    try:
        gone = sfn.describe_state_machine(stateMachineArn=arn)
        assert gone["status"] == "DELETING"
    except botocore.exceptions.ClientError as e:
        assert error_code(e) == "StateMachineDoesNotExist"


def test_list_state_machines_pages(sfn, machine):
    arns = {machine() for _ in range(3)}
    seen, token, pages = set(), None, 0
    while True:
        kwargs = {"maxResults": 2, **({"nextToken": token} if token else {})}
        page = sfn.list_state_machines(**kwargs)
        assert len(page["stateMachines"]) <= 2
        seen |= {m["stateMachineArn"] for m in page["stateMachines"]}
        pages += 1
        token = page.get("nextToken")
        if not token:
            break
    assert arns <= seen and pages >= 2
    expect_error("InvalidToken", sfn.list_state_machines, nextToken="not-a-token")


def test_names_arns_and_missing_resources(sfn, machine):
    expect_error("InvalidName", sfn.create_state_machine, name="has space",
                 definition=json.dumps(PASS), roleArn=ROLE)
    expect_error("InvalidArn", sfn.describe_state_machine, stateMachineArn="not-an-arn")
    expect_error("InvalidArn", sfn.describe_execution, executionArn=machine_arn("x"))
    expect_error("InvalidArn", sfn.start_execution, stateMachineArn="arn:aws:lambda:x")
    expect_error("StateMachineDoesNotExist", sfn.describe_state_machine,
                 stateMachineArn=machine_arn(unique_name("missing")))
    expect_error("StateMachineDoesNotExist", sfn.start_execution,
                 stateMachineArn=machine_arn(unique_name("missing")))
    expect_error("ExecutionDoesNotExist", sfn.describe_execution,
                 executionArn=f"arn:aws:states:{REGION}:{ACCOUNT}:execution:m:{unique_name('e')}")
    arn = machine()
    expect_error("InvalidName", sfn.start_execution, stateMachineArn=arn, name="bad*name")
    expect_error("ValidationException", sfn.create_state_machine, name=unique_name("sm"),
                 definition=json.dumps(PASS), roleArn=ROLE, type="BOGUS")


@pytest.mark.parametrize("what,definition,names", [
    ("invalid JSON", '{"StartAt": "A", "States": {', None),
    ("unknown state type",
     {"StartAt": "A", "States": {"A": {"Type": "Teleport", "End": True}}}, "/States/A"),
    ("bad JSONPath",
     {"StartAt": "A", "States": {"A": {"Type": "Pass", "InputPath": "$.a[", "End": True}}},
     "/States/A"),
    ("intrinsic arity",
     {"StartAt": "A", "States": {"A": {"Type": "Pass", "Parameters": {
         "x.$": "States.ArrayLength($.a, $.b)"}, "End": True}}}, "/States/A"),
    ("cycle without exit",
     {"StartAt": "Go", "States": {
         "Go": {"Type": "Choice", "Choices": [
             {"Variable": "$.loop", "BooleanEquals": True, "Next": "A"}], "Default": "Done"},
         "A": {"Type": "Pass", "Next": "B"},
         "B": {"Type": "Pass", "Next": "A"},
         "Done": {"Type": "Succeed"}}}, "/States/A"),
    ("missing Next target",
     {"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Nowhere"}}}, "/States/A"),
])
def test_invalid_definitions_are_refused_naming_the_state(sfn, what, definition, names):
    text = definition if isinstance(definition, str) else json.dumps(definition)
    message = expect_error("InvalidDefinition", sfn.create_state_machine,
                           name=unique_name("bad"), definition=text, roleArn=ROLE)
    assert message.startswith("Invalid State Machine Definition: '"), message
    if names:
        assert names in message, f"{what}: {message}"
    # The same definition through ValidateStateMachineDefinition.
    v = sfn.validate_state_machine_definition(definition=text)
    assert v["result"] == "FAIL" and v["diagnostics"], v
    assert all(d["severity"] == "ERROR" and d["code"] for d in v["diagnostics"])
    if names:
        assert any(d["location"].startswith(names) for d in v["diagnostics"]), v
    if what == "cycle without exit":
        assert any(d["code"] == "MISSING_END_STATE" for d in v["diagnostics"]), v


def test_validate_state_machine_definition(sfn):
    ok = sfn.validate_state_machine_definition(definition=json.dumps(PASS), type="STANDARD")
    assert (ok["result"], ok["diagnostics"], ok["truncated"]) == ("OK", [], False)
    many = {"StartAt": "A", "States": {
        "A": {"Type": "Pass", "Next": "X1"}, "B": {"Type": "Pass", "Next": "X2"},
        "C": {"Type": "Pass", "Next": "X3"}}}
    full = sfn.validate_state_machine_definition(definition=json.dumps(many))
    assert full["result"] == "FAIL" and len(full["diagnostics"]) >= 3
    one = sfn.validate_state_machine_definition(definition=json.dumps(many), maxResults=1)
    assert len(one["diagnostics"]) == 1 and one["truncated"] is True


# --------------------------------------------------------------------------------------------
# Versions and aliases
# --------------------------------------------------------------------------------------------

def test_versions_and_aliases(sfn, machine):
    name = unique_name("sm")
    created = sfn.create_state_machine(name=name, definition=json.dumps(PASS), roleArn=ROLE,
                                       publish=True, versionDescription="first")
    arn = created["stateMachineArn"]
    try:
        v1 = created["stateMachineVersionArn"]
        assert v1 == f"{arn}:1"
        v2 = sfn.update_state_machine(stateMachineArn=arn, definition=json.dumps(WAIT),
                                      publish=True)["stateMachineVersionArn"]
        assert v2 == f"{arn}:2"
        # Publishing an unchanged revision returns the latest version.
        assert sfn.publish_state_machine_version(
            stateMachineArn=arn)["stateMachineVersionArn"] == v2
        versions = sfn.list_state_machine_versions(stateMachineArn=arn)["stateMachineVersions"]
        assert [v["stateMachineVersionArn"] for v in versions] == [v2, v1]
        d1 = sfn.describe_state_machine(stateMachineArn=v1)
        assert d1["stateMachineArn"] == v1 and json.loads(d1["definition"]) == PASS
        assert d1["description"] == "first"

        alias = sfn.create_state_machine_alias(
            name="prod", routingConfiguration=[{"stateMachineVersionArn": v1, "weight": 100}],
            description="live")["stateMachineAliasArn"]
        assert alias == f"{arn}:prod"
        desc = sfn.describe_state_machine_alias(stateMachineAliasArn=alias)
        assert (desc["name"], desc["description"]) == ("prod", "live")
        assert desc["routingConfiguration"] == [{"stateMachineVersionArn": v1, "weight": 100}]
        listed = sfn.list_state_machine_aliases(stateMachineArn=arn)["stateMachineAliases"]
        assert [a["stateMachineAliasArn"] for a in listed] == [alias]

        # An execution through the alias runs version 1 (the Pass machine).
        ex = sfn.start_execution(stateMachineArn=alias, input='{"n": 1}')["executionArn"]
        done = wait_done(sfn, ex)
        assert done["status"] == "SUCCEEDED"
        assert (done["stateMachineAliasArn"], done["stateMachineVersionArn"]) == (alias, v1)
        assert json.loads(done["output"]) == {"n": 1, "result": {"ok": True}}

        # A version an alias routes to cannot be deleted.
        expect_error("ConflictException", sfn.delete_state_machine_version,
                     stateMachineVersionArn=v1)
        sfn.update_state_machine_alias(
            stateMachineAliasArn=alias,
            routingConfiguration=[{"stateMachineVersionArn": v2, "weight": 100}])
        assert sfn.describe_state_machine_alias(stateMachineAliasArn=alias)[
            "routingConfiguration"][0]["stateMachineVersionArn"] == v2
        expect_error("ValidationException", sfn.update_state_machine_alias,
                     stateMachineAliasArn=alias,
                     routingConfiguration=[{"stateMachineVersionArn": v1, "weight": 50}])
        sfn.delete_state_machine_version(stateMachineVersionArn=v1)
        versions = sfn.list_state_machine_versions(stateMachineArn=arn)["stateMachineVersions"]
        assert [v["stateMachineVersionArn"] for v in versions] == [v2]
        sfn.delete_state_machine_alias(stateMachineAliasArn=alias)
        expect_error("ResourceNotFound", sfn.describe_state_machine_alias,
                     stateMachineAliasArn=alias)
        expect_error("InvalidArn", sfn.describe_state_machine_alias, stateMachineAliasArn=v2)
    finally:
        sfn.delete_state_machine(stateMachineArn=arn)


# --------------------------------------------------------------------------------------------
# Executions
# --------------------------------------------------------------------------------------------

def test_start_execution_runs_a_pass_machine(sfn, machine):
    arn = machine(PASS)
    started = sfn.start_execution(stateMachineArn=arn, name="run-1", input='{"a": 1}')
    assert started["executionArn"] == arn.replace(":stateMachine:", ":execution:") + ":run-1"
    assert started["startDate"].timestamp() == pytest.approx(time.time(), abs=60)
    done = wait_done(sfn, started["executionArn"])
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["output"]) == {"a": 1, "result": {"ok": True}}
    assert done["stopDate"] >= done["startDate"]
    assert (done["name"], done["stateMachineArn"], done["input"]) == ("run-1", arn, '{"a": 1}')
    # The name is taken by the finished execution.
    expect_error("ExecutionAlreadyExists", sfn.start_execution, stateMachineArn=arn,
                 name="run-1", input='{"a": 1}')
    # A generated name when none is given.
    other = sfn.start_execution(stateMachineArn=arn)["executionArn"]
    assert wait_done(sfn, other)["status"] == "SUCCEEDED"
    expect_error("InvalidExecutionInput", sfn.start_execution, stateMachineArn=arn,
                 input="{not json")


def test_start_execution_name_idempotency_stop_and_redrive(sfn, machine):
    arn = machine(WAIT)
    first = sfn.start_execution(stateMachineArn=arn, name="same", input='{"x": 1}')
    # The same name and input while it runs: the same execution.
    again = sfn.start_execution(stateMachineArn=arn, name="same", input='{"x": 1}')
    assert again["executionArn"] == first["executionArn"]
    expect_error("ExecutionAlreadyExists", sfn.start_execution, stateMachineArn=arn,
                 name="same", input='{"x": 2}')
    stopped = sfn.stop_execution(executionArn=first["executionArn"], error="Halt", cause="test")
    assert stopped["stopDate"].timestamp() == pytest.approx(time.time(), abs=60)
    desc = sfn.describe_execution(executionArn=first["executionArn"])
    assert (desc["status"], desc["error"], desc["cause"]) == ("ABORTED", "Halt", "test")
    assert desc["redriveStatus"] == "REDRIVABLE"
    redriven = sfn.redrive_execution(executionArn=first["executionArn"])
    assert redriven["redriveDate"].timestamp() == pytest.approx(time.time(), abs=60)
    done = wait_done(sfn, first["executionArn"])
    assert done["status"] == "SUCCEEDED" and done["redriveCount"] == 1, done
    expect_error("ExecutionNotRedrivable", sfn.redrive_execution,
                 executionArn=first["executionArn"])


def test_list_executions_filters_and_pages(sfn, machine):
    arn = machine(PASS)
    done = [sfn.start_execution(stateMachineArn=arn)["executionArn"] for _ in range(3)]
    for ex in done:
        wait_done(sfn, ex)
    failing = machine(FAIL)
    failed = sfn.start_execution(stateMachineArn=failing)["executionArn"]
    assert wait_done(sfn, failed)["status"] == "FAILED"

    seen, token = [], None
    while True:
        page = sfn.list_executions(stateMachineArn=arn, maxResults=2,
                                   **({"nextToken": token} if token else {}))
        assert len(page["executions"]) <= 2
        seen += [e["executionArn"] for e in page["executions"]]
        token = page.get("nextToken")
        if not token:
            break
    assert sorted(seen) == sorted(done)
    ok = sfn.list_executions(stateMachineArn=arn, statusFilter="SUCCEEDED")["executions"]
    assert len(ok) == 3 and all(e["status"] == "SUCCEEDED" for e in ok)
    assert sfn.list_executions(stateMachineArn=arn, statusFilter="FAILED")["executions"] == []
    bad = sfn.list_executions(stateMachineArn=failing, statusFilter="FAILED")["executions"]
    assert [e["executionArn"] for e in bad] == [failed]
    expect_error("StateMachineDoesNotExist", sfn.list_executions,
                 stateMachineArn=machine_arn(unique_name("missing")))


def test_execution_history_in_both_orders_with_paging(sfn, machine):
    arn = machine({"StartAt": "A", "States": {
        "A": {"Type": "Pass", "Next": "B"},
        "B": {"Type": "Pass", "Result": 7, "ResultPath": "$.b", "End": True}}})
    ex = sfn.start_execution(stateMachineArn=arn, input='{"in": true}')["executionArn"]
    assert wait_done(sfn, ex)["status"] == "SUCCEEDED"
    events = sfn.get_execution_history(executionArn=ex)["events"]
    types = [e["type"] for e in events]
    assert types == ["ExecutionStarted", "PassStateEntered", "PassStateExited",
                     "PassStateEntered", "PassStateExited", "ExecutionSucceeded"], types
    assert [e["id"] for e in events] == list(range(1, 7))
    assert all(e["previousEventId"] == e["id"] - 1 for e in events)
    started = events[0]["executionStartedEventDetails"]
    assert json.loads(started["input"]) == {"in": True} and started["roleArn"] == ROLE
    assert events[1]["stateEnteredEventDetails"]["name"] == "A"
    assert events[4]["stateExitedEventDetails"]["name"] == "B"
    assert json.loads(events[5]["executionSucceededEventDetails"]["output"]) == {
        "in": True, "b": 7}

    reverse = sfn.get_execution_history(executionArn=ex, reverseOrder=True)["events"]
    assert [e["id"] for e in reverse] == list(range(6, 0, -1))

    for order in (False, True):
        paged, token = [], None
        while True:
            page = sfn.get_execution_history(executionArn=ex, maxResults=2, reverseOrder=order,
                                             **({"nextToken": token} if token else {}))
            assert len(page["events"]) <= 2
            paged += [e["id"] for e in page["events"]]
            token = page.get("nextToken")
            if not token:
                break
        assert paged == (list(range(6, 0, -1)) if order else list(range(1, 7)))

    lean = sfn.get_execution_history(executionArn=ex, includeExecutionData=False)["events"]
    assert "input" not in lean[0]["executionStartedEventDetails"]
    assert "output" not in lean[5]["executionSucceededEventDetails"]
    expect_error("ExecutionDoesNotExist", sfn.get_execution_history, executionArn=ex + "-nope")


def test_describe_state_machine_for_execution(sfn, machine):
    arn = machine(PASS)
    ex = sfn.start_execution(stateMachineArn=arn)["executionArn"]
    wait_done(sfn, ex)
    sfn.update_state_machine(stateMachineArn=arn, definition=json.dumps(WAIT))
    d = sfn.describe_state_machine_for_execution(executionArn=ex)
    assert d["stateMachineArn"] == arn and d["roleArn"] == ROLE
    # The execution's own revision, not the updated one.
    assert json.loads(d["definition"]) == PASS
    assert d["name"] == arn.rsplit(":", 1)[1]


def test_start_sync_execution(sfn, machine):
    express = machine(PASS, kind="EXPRESS")
    r = sfn.start_sync_execution(stateMachineArn=express, input='{"s": 1}')
    assert r["status"] == "SUCCEEDED", r
    assert json.loads(r["output"]) == {"s": 1, "result": {"ok": True}}
    assert r["stopDate"] >= r["startDate"]
    assert r["executionArn"].startswith(express.replace(":stateMachine:", ":execution:"))
    # A failed execution is still a 200 answer, with its error and cause.
    failing = machine(FAIL, kind="EXPRESS")
    r = sfn.start_sync_execution(stateMachineArn=failing)
    assert (r["status"], r["error"], r["cause"]) == ("FAILED", "Boom", "it broke")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200
    expect_error("StateMachineTypeNotSupported", sfn.start_sync_execution,
                 stateMachineArn=machine(PASS))


def test_input_over_256_kib_is_refused(sfn, machine):
    arn = machine(PASS)
    huge = json.dumps({"blob": "x" * (256 * 1024)})
    expect_error("ValidationException", sfn.start_execution, stateMachineArn=arn, input=huge)
    just_fits = json.dumps({"blob": "x" * (256 * 1024 - 100)})
    ex = sfn.start_execution(stateMachineArn=arn, input=just_fits)["executionArn"]
    assert wait_done(sfn, ex)["status"] == "SUCCEEDED"


# --------------------------------------------------------------------------------------------
# Task tokens
# --------------------------------------------------------------------------------------------

def callback_machine(sfn, machine, make_function):
    fn = unique_name("cb")
    make_function(name=fn, zip_data=python_zip("callback"))
    definition = {"StartAt": "Ask", "States": {"Ask": {
        "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
        "Parameters": {"FunctionName": fn, "Payload": {"token.$": "$$.Task.Token"}},
        "HeartbeatSeconds": 60, "End": True}}}
    return machine(definition)


def token_of(sfn, ex, timeout=60):
    """The task token, read from the TaskScheduled event's parameters."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in sfn.get_execution_history(executionArn=ex)["events"]:
            if e["type"] == "TaskScheduled":
                params = json.loads(e["taskScheduledEventDetails"]["parameters"])
                assert e["taskScheduledEventDetails"]["resourceType"] == "lambda"
                return params["Payload"]["token"]
        status = sfn.describe_execution(executionArn=ex)["status"]
        assert status == "RUNNING", sfn.describe_execution(executionArn=ex)
        time.sleep(0.1)
    pytest.fail("no TaskScheduled event")


def test_task_token_success_and_failure(sfn, machine, make_function):
    arn = callback_machine(sfn, machine, make_function)
    ex = sfn.start_execution(stateMachineArn=arn)["executionArn"]
    token = token_of(sfn, ex)
    sfn.send_task_heartbeat(taskToken=token)
    time.sleep(0.3)
    assert sfn.describe_execution(executionArn=ex)["status"] == "RUNNING"
    expect_error("InvalidOutput", sfn.send_task_success, taskToken=token, output="{nope")
    sfn.send_task_success(taskToken=token, output='{"approved": true}')
    done = wait_done(sfn, ex)
    assert done["status"] == "SUCCEEDED", done
    assert json.loads(done["output"]) == {"approved": True}
    # The task is over: another answer is TaskTimedOut.
    expect_error("TaskTimedOut", sfn.send_task_failure, taskToken=token, error="Late")
    expect_error("InvalidToken", sfn.send_task_success, taskToken="no-such-token", output="{}")

    ex = sfn.start_execution(stateMachineArn=arn)["executionArn"]
    token = token_of(sfn, ex)
    sfn.send_task_failure(taskToken=token, error="Rejected", cause="by a human")
    done = wait_done(sfn, ex)
    assert (done["status"], done["error"], done["cause"]) == ("FAILED", "Rejected", "by a human")


# --------------------------------------------------------------------------------------------
# Tags, protocol errors, the CLI
# --------------------------------------------------------------------------------------------

def test_tags(sfn, machine):
    arn = machine(tags=[{"key": "a", "value": "1"}])
    sfn.tag_resource(resourceArn=arn, tags=[{"key": "b", "value": "2"}, {"key": "a", "value": "3"}])
    tags = sfn.list_tags_for_resource(resourceArn=arn)["tags"]
    assert sorted((t["key"], t["value"]) for t in tags) == [("a", "3"), ("b", "2")]
    sfn.untag_resource(resourceArn=arn, tagKeys=["a"])
    assert sfn.list_tags_for_resource(resourceArn=arn)["tags"] == [{"key": "b", "value": "2"}]
    expect_error("StateMachineDoesNotExist", sfn.list_tags_for_resource,
                 resourceArn=machine_arn(unique_name("missing")))
    expect_error("InvalidArn", sfn.tag_resource, resourceArn="nope", tags=[])


def raw(nimbus, target, body):
    req = urllib.request.Request(nimbus.base_url + "/", data=body, method="POST", headers={
        "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.0"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def test_protocol_errors(nimbus):
    status, headers, body = raw(nimbus, "AWSStepFunctions.Teleport", b"{}")
    assert status == 400
    assert body["__type"] == "com.amazonaws.swf.service.v2.model#UnknownOperationException"
    assert headers["Content-Type"] == "application/x-amz-json-1.0"
    status, _, body = raw(nimbus, "AWSStepFunctions.DescribeStateMachine", b"{}")
    assert (status, body["__type"].split("#")[1]) == (400, "MissingRequiredParameter")
    status, _, body = raw(nimbus, "AWSStepFunctions.ListStateMachines", b"{not json")
    assert (status, body["__type"].split("#")[1]) == (400, "SerializationException")
    status, headers, body = raw(nimbus, "AWSStepFunctions.ListStateMachines", b"")
    assert status == 200 and "stateMachines" in body


def test_aws_cli(nimbus, sfn, tmp_path):
    """`aws stepfunctions …`: create, list, start, describe, history, delete, and an error."""
    def cli(*args, check=True):
        p = subprocess.run(
            [aws_cli(), "stepfunctions", *args, "--endpoint-url", nimbus.base_url,
             "--region", REGION, "--output", "json"],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if check:
            assert p.returncode == 0, f"{args}: {p.stderr}"
            return json.loads(p.stdout) if p.stdout.strip() else None
        return p

    definition = tmp_path / "flow.asl.json"
    definition.write_text(json.dumps(PASS))
    name = unique_name("cli")
    arn = cli("create-state-machine", "--name", name, "--definition", f"file://{definition}",
              "--role-arn", ROLE)["stateMachineArn"]
    try:
        listed = cli("list-state-machines")["stateMachines"]
        assert arn in [m["stateMachineArn"] for m in listed]
        ex = cli("start-execution", "--state-machine-arn", arn, "--input", '{"c": 1}')[
            "executionArn"]
        assert wait_done(sfn, ex)["status"] == "SUCCEEDED"
        desc = cli("describe-execution", "--execution-arn", ex)
        assert json.loads(desc["output"]) == {"c": 1, "result": {"ok": True}}
        events = cli("get-execution-history", "--execution-arn", ex, "--reverse-order")["events"]
        assert events[0]["type"] == "ExecutionSucceeded"
        assert [e["executionArn"] for e in cli("list-executions", "--state-machine-arn", arn)[
            "executions"]] == [ex]
        p = cli("describe-state-machine", "--state-machine-arn",
                machine_arn(unique_name("missing")), check=False)
        assert p.returncode != 0 and "StateMachineDoesNotExist" in p.stderr, p.stderr
    finally:
        cli("delete-state-machine", "--state-machine-arn", arn)


# --------------------------------------------------------------------------------------------
# Authorisation
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    srv = NimbusServer(nimbus_bin(), tmp_path_factory.mktemp("nimbus-sfn-auth"), auth=True)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_states_actions_are_authorised_per_resource(auth_server):
    admin = sfn_client(auth_server.base_url, *auth_server.admin_key())
    name = unique_name("sm")
    arn = admin.create_state_machine(name=name, definition=json.dumps(PASS),
                                     roleArn=ROLE)["stateMachineArn"]
    key = auth_server.create_key(unique_name("k"), {"Statement": [
        {"Effect": "Allow", "Action": "states:DescribeStateMachine", "Resource": arn}]})
    limited = sfn_client(auth_server.base_url, *key)
    assert limited.describe_state_machine(stateMachineArn=arn)["name"] == name
    message = expect_error("AccessDeniedException", limited.start_execution,
                           stateMachineArn=arn)
    assert "states:StartExecution" in message, message
    expect_error("AccessDeniedException", limited.list_state_machines)
    # Another machine is another resource.
    other = admin.create_state_machine(name=unique_name("sm"), definition=json.dumps(PASS),
                                       roleArn=ROLE)["stateMachineArn"]
    expect_error("AccessDeniedException", limited.describe_state_machine, stateMachineArn=other)
    # The admin key may run it.
    ex = admin.start_execution(stateMachineArn=arn)["executionArn"]
    assert wait_done(admin, ex)["status"] == "SUCCEEDED"
    expect_error("UnrecognizedClientException",
                 sfn_client(auth_server.base_url, "AKIAUNKNOWNUNKNOWN00", "x" * 40)
                 .list_state_machines)


def test_tasks_act_as_the_machine_role(auth_server):
    """With --auth on, a Task may do only what the state machine's role allows: a role
    without lambda:InvokeFunction on the function fails the Task with States.Permissions;
    granting it (PutRolePolicy) lets the next execution through."""
    key = auth_server.admin_key()
    admin = sfn_client(auth_server.base_url, *key)
    iam, lam = (boto3.client(service, endpoint_url=auth_server.base_url, region_name=REGION,
                             aws_access_key_id=key[0], aws_secret_access_key=key[1])
                for service in ("iam", "lambda"))
    fn = unique_name("f")
    lam.create_function(FunctionName=fn, Runtime="python3.11", Handler="app.handler",
                        Role=f"arn:aws:iam::{ACCOUNT}:role/any", Code={"ZipFile": python_zip("v1")})
    role = unique_name("r")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {
        "Service": "states.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    role_arn = iam.create_role(RoleName=role,
                               AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    fn_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{fn}"
    definition = {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": fn_arn, "End": True}}}
    arn = admin.create_state_machine(name=unique_name("sm"), definition=json.dumps(definition),
                                     roleArn=role_arn)["stateMachineArn"]
    ex = admin.start_execution(stateMachineArn=arn)["executionArn"]
    d = wait_done(admin, ex)
    assert (d["status"], d["error"]) == ("FAILED", "States.Permissions"), d
    assert "lambda:InvokeFunction" in d["cause"]
    iam.put_role_policy(RoleName=role, PolicyName="invoke", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                                               "Action": "lambda:InvokeFunction",
                                               "Resource": fn_arn}]}))
    ex = admin.start_execution(stateMachineArn=arn)["executionArn"]
    assert wait_done(admin, ex)["status"] == "SUCCEEDED"
