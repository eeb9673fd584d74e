"""EventBridge PutEvents through unmodified boto3 (AWS's JSON 1.1 protocol, `POST /` with
`X-Amz-Target: AWSEvents.PutEvents`), routed by a rule made with Nimbus's native API."""

import datetime
import json
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY, REGION, SECRET_KEY, native, queue_arn, unique_name


def events_client(nimbus):
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)
    return session.client("events", endpoint_url=nimbus.base_url,
                          config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))


def test_put_events_routes_to_the_rule_target(nimbus, make_function):
    fn = unique_name("eb")
    make_function(name=fn)
    source = unique_name("src")
    native(nimbus, "PUT", f"/v1/buses/default/rules/{fn}",
           {"pattern": {"source": [source], "detail": {"n": [{"numeric": [">", 1]}]}},
            "targets": [fn]})
    client = events_client(nimbus)
    when = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    resp = client.put_events(Entries=[
        {"Source": source, "DetailType": "Ping", "Detail": json.dumps({"n": 2}), "Time": when,
         "Resources": ["arn:aws:s3:::bucket"]},
        {"Source": source, "DetailType": "Ping", "Detail": json.dumps({"n": 1})},
        {"Source": source, "DetailType": "Ping", "Detail": "{}",
         "EventBusName": "arn:aws:events:us-east-1:000000000000:event-bus/missing"},
    ])
    assert resp["FailedEntryCount"] == 1
    assert resp["Entries"][2]["ErrorCode"] == "ResourceNotFoundException"
    event_id = resp["Entries"][0]["EventId"]
    deadline = time.time() + 30
    events = []
    while time.time() < deadline:
        events = native(nimbus, "GET", f"/v1/functions/{fn}/events")["events"]
        if events and events[0]["status"] == "succeeded":
            break
        time.sleep(0.2)
    assert len(events) == 1, events  # only the entry whose detail matched
    got = json.loads(events[0]["result"])["event"]
    assert got["id"] == event_id
    assert got["source"] == source
    assert got["detail-type"] == "Ping"
    assert got["time"] == "2030-01-02T03:04:05Z"
    assert got["resources"] == ["arn:aws:s3:::bucket"]
    assert got["detail"] == {"n": 2}
    assert (got["version"], got["account"], got["region"]) == ("0", "000000000000", "us-east-1")


def sqs_client(nimbus):
    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)
    return session.client("sqs", endpoint_url=nimbus.base_url,
                          config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))


def test_a_fifo_queue_target_needs_sqs_parameters_message_group_id(nimbus):
    """PutTargets on a FIFO queue: refused without `SqsParameters.MessageGroupId` (as
    EventBridge does); with one, matched events reach the queue in that group, in order,
    and the group is listed back. A group on a standard queue target is refused too."""
    events, sqs = events_client(nimbus), sqs_client(nimbus)
    qname = unique_name("ebq") + ".fifo"
    # No content-based deduplication: the event's id deduplicates.
    url = sqs.create_queue(QueueName=qname, Attributes={"FifoQueue": "true"})["QueueUrl"]
    arn = queue_arn(qname)
    source, rule = unique_name("src"), unique_name("rule")
    events.put_rule(Name=rule, EventPattern=json.dumps({"source": [source]}))
    try:
        events.put_targets(Rule=rule, Targets=[{"Id": "q", "Arn": arn}])
        raise AssertionError("a FIFO target without a message group was accepted")
    except ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400, e.response
        assert "MessageGroupId" in e.response["Error"]["Message"], e.response
    assert events.list_targets_by_rule(Rule=rule)["Targets"] == []
    plain = unique_name("ebplain")
    sqs.create_queue(QueueName=plain)
    try:
        events.put_targets(Rule=rule, Targets=[{"Id": "p", "Arn": queue_arn(plain),
                                                "SqsParameters": {"MessageGroupId": "g"}}])
        raise AssertionError("a message group on a standard queue target was accepted")
    except ClientError as e:
        assert "FIFO" in e.response["Error"]["Message"], e.response

    resp = events.put_targets(Rule=rule, Targets=[
        {"Id": "q", "Arn": arn, "SqsParameters": {"MessageGroupId": "orders"}}])
    assert resp["FailedEntryCount"] == 0
    listed = events.list_targets_by_rule(Rule=rule)["Targets"]
    assert listed == [{"Id": "q", "Arn": arn, "SqsParameters": {"MessageGroupId": "orders"}}]

    sent = events.put_events(Entries=[
        {"Source": source, "DetailType": "n", "Detail": json.dumps({"n": i})} for i in range(3)])
    assert sent["FailedEntryCount"] == 0
    got = []
    deadline = time.time() + 30
    while len(got) < 3 and time.time() < deadline:
        r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                MessageSystemAttributeNames=["MessageGroupId"])
        for m in r.get("Messages", []):
            got.append((m["Attributes"]["MessageGroupId"], json.loads(m["Body"])))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert [g for g, _ in got] == ["orders"] * 3, got
    assert [b["detail"]["n"] for _, b in got] == [0, 1, 2]
    assert [b["id"] for _, b in got] == [e["EventId"] for e in sent["Entries"]]


def test_lambda_destinations_refuse_fifo_queues(nimbus, make_function, lambda_client):
    """Lambda sends invocation records to standard queues only: an OnSuccess/OnFailure
    destination naming a FIFO queue is refused when configured, not dropped later."""
    fn = unique_name("dest")
    make_function(name=fn)
    qname = unique_name("destq") + ".fifo"
    sqs_client(nimbus).create_queue(QueueName=qname, Attributes={"FifoQueue": "true"})
    for which in ("OnSuccess", "OnFailure"):
        try:
            lambda_client.put_function_event_invoke_config(
                FunctionName=fn,
                DestinationConfig={which: {"Destination": queue_arn(qname)}})
            raise AssertionError(f"{which} to a FIFO queue was accepted")
        except ClientError as e:
            assert e.response["Error"]["Code"] == "InvalidParameterValueException", e.response
            assert "FIFO" in e.response["Error"]["Message"], e.response
