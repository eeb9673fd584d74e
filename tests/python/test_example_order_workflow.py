"""examples/order-workflow, run as its README says: `nimbus up` on a copy of it, orders
started with boto3's Step Functions client, approvals answered with the AWS CLI's
`aws stepfunctions send-task-success` (and boto3), outcomes read from DescribeExecution and
GetExecutionHistory.

- A small order runs Validate → Parallel (Reserve ‖ Charge) → Map (Pack, 2 at a time) → Done.
- An order whose id ends in an even digit is declined by the bank twice: Charge is retried
  with backoff and succeeds on its third attempt.
- An order of 1,000 or more waits for approval: its task token arrives on the
  order-approvals queue; approved, it succeeds; refused, it is compensated and fails.
- A refused card fails the Parallel: Catch → Compensate → Failed. An order without items is
  rejected by Validate.

Run: `NIMBUS_BIN=target/debug/nimbus python3 -m pytest tests/python/test_example_order_workflow.py -q`.
"""

import configparser
import json
import os
import subprocess
import time

import boto3
import pytest

from conftest import aws_cli
from test_examples import Up, eventually


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    up = Up("order-workflow", tmp_path_factory.mktemp("order-workflow"))
    try:
        up.wait_for("workflow order", timeout=300)
        creds = configparser.ConfigParser()
        creds.read(up.data / "credentials")
        keys = dict(aws_access_key_id=creds["default"]["aws_access_key_id"],
                    aws_secret_access_key=creds["default"]["aws_secret_access_key"])
        sfn = boto3.client("stepfunctions", endpoint_url=up.base, region_name="us-east-1", **keys)
        sqs = boto3.client("sqs", endpoint_url=up.base, region_name="us-east-1", **keys)
        machine = next(m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]
                       if m["name"] == "order")
        yield up, sfn, sqs, machine, keys
    finally:
        up.stop()


def order(order_id, customer="ada", items=(("book", 2, 12.5), ("pen", 3, 1.0))):
    return {"orderId": order_id, "customer": customer,
            "items": [{"sku": s, "qty": q, "price": p} for s, q, p in items]}


def run(sfn, machine, body, name=None):
    arn = sfn.start_execution(stateMachineArn=machine, name=name or body["orderId"],
                              input=json.dumps(body))["executionArn"]
    return arn


def finished(sfn, arn, timeout=60):
    return eventually(lambda: (lambda d: d if d["status"] != "RUNNING" else None)(
        sfn.describe_execution(executionArn=arn)), timeout=timeout, what=f"{arn} to end")


def events(sfn, arn):
    out, token = [], None
    while True:
        page = sfn.get_execution_history(executionArn=arn, maxResults=1000,
                                         **({"nextToken": token} if token else {}))
        out += page["events"]
        token = page.get("nextToken")
        if not token:
            return out


def approval(sqs, order_id):
    url = sqs.get_queue_url(QueueName="order-approvals")["QueueUrl"]

    def receive():
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                     WaitTimeSeconds=1).get("Messages", []):
            body = json.loads(m["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            if body["orderId"] == order_id:
                return body
        return None
    return eventually(receive, timeout=60, what=f"the approval request of {order_id}")


def test_a_small_order_is_reserved_charged_and_packed(shop):
    up, sfn, sqs, machine, _ = shop
    d = finished(sfn, run(sfn, machine, order("o-101")))
    assert d["status"] == "SUCCEEDED", d
    out = json.loads(d["output"])
    assert out["amount"] == 28.0 and out["needsApproval"] is False
    reservation, charge = out["work"]
    assert reservation["skus"] == ["book", "pen"]
    assert charge["amount"] == 28.0 and charge["attempts"] == 1
    assert out["packed"] == [{"sku": "book", "packed": 2, "box": "box-0"},
                             {"sku": "pen", "packed": 3, "box": "box-1"}]
    types = [e["type"] for e in events(sfn, d["executionArn"])]
    assert types.count("MapIterationSucceeded") == 2
    assert types[-1] == "ExecutionSucceeded"


def test_a_declined_charge_is_retried_with_backoff(shop):
    up, sfn, sqs, machine, _ = shop
    started = time.monotonic()
    d = finished(sfn, run(sfn, machine, order("o-102")))
    assert d["status"] == "SUCCEEDED", d
    assert json.loads(d["output"])["work"][1]["attempts"] == 3
    failed = [e for e in events(sfn, d["executionArn"]) if e["type"] == "LambdaFunctionFailed"]
    assert [e["lambdaFunctionFailedEventDetails"]["error"] for e in failed] == \
        ["PaymentTemporarilyDeclined"] * 2
    # Two backoffs of at most 1 s and 2 s (FULL jitter): it took a moment, not forever.
    assert time.monotonic() - started < 30


def test_a_large_order_waits_for_approval_and_succeeds_when_approved(shop):
    up, sfn, sqs, machine, keys = shop
    arn = run(sfn, machine, order("o-201", items=(("desk", 1, 1200.0),)))
    request = approval(sqs, "o-201")
    assert request["amount"] == 1200.0
    assert sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
    # The README's way: the AWS CLI.
    env = dict(os.environ, AWS_ACCESS_KEY_ID=keys["aws_access_key_id"],
               AWS_SECRET_ACCESS_KEY=keys["aws_secret_access_key"], AWS_DEFAULT_REGION="us-east-1")
    out = subprocess.run([aws_cli(), "stepfunctions", "send-task-success", "--endpoint-url", up.base,
                          "--task-token", request["taskToken"],
                          "--task-output", json.dumps({"approved": True, "by": "grace"})],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    d = finished(sfn, arn)
    assert d["status"] == "SUCCEEDED", d
    assert json.loads(d["output"])["approval"] == {"approved": True, "by": "grace"}


def test_a_refused_approval_is_compensated(shop):
    up, sfn, sqs, machine, _ = shop
    arn = run(sfn, machine, order("o-203", items=(("sofa", 1, 2500.0),)))
    request = approval(sqs, "o-203")
    sfn.send_task_success(taskToken=request["taskToken"], output=json.dumps({"approved": False}))
    d = finished(sfn, arn)
    assert (d["status"], d["error"]) == ("FAILED", "OrderFailed"), d
    assert d["cause"] == "order o-203 was not approved"
    compensated = [json.loads(e["lambdaFunctionSucceededEventDetails"]["output"])
                   for e in events(sfn, arn) if e["type"] == "LambdaFunctionSucceeded"
                   and "compensated" in e["lambdaFunctionSucceededEventDetails"]["output"]]
    assert len(compensated) == 1
    undone = compensated[0]["compensated"]
    assert any(u.startswith("released res-") for u in undone)
    assert any(u.startswith("refunded ch-") for u in undone)
    # The token is spent: answering again is refused as AWS does.
    with pytest.raises(sfn.exceptions.TaskTimedOut):
        sfn.send_task_success(taskToken=request["taskToken"], output="{}")


def test_a_refused_card_and_an_empty_order_fail_cleanly(shop):
    up, sfn, sqs, machine, _ = shop
    d = finished(sfn, run(sfn, machine, order("o-301", customer="mallory")))
    assert (d["status"], d["error"]) == ("FAILED", "OrderFailed"), d
    assert "refused" in d["cause"]
    d = finished(sfn, run(sfn, machine, {"orderId": "o-302", "customer": "ada", "items": []}))
    assert (d["status"], d["error"]) == ("FAILED", "OrderRejected"), d
