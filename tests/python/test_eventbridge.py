"""EventBridge PutEvents through unmodified boto3 (AWS's JSON 1.1 protocol, `POST /` with
`X-Amz-Target: AWSEvents.PutEvents`), routed by a rule made with Nimbus's native API."""

import datetime
import json
import time

import boto3
from botocore.config import Config

from conftest import ACCESS_KEY, REGION, SECRET_KEY, native, unique_name


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
