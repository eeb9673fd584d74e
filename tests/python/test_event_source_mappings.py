"""Lambda's event-source mapping operations through unmodified boto3, over Nimbus's built-in
queues (whose ARNs are SQS-style: arn:aws:sqs:us-east-1:000000000000:NAME)."""

import datetime
import json
import subprocess
import time

import botocore
import pytest

from conftest import ACCOUNT, aws_cli, error_code, http_status, native, queue_arn, unique_name


@pytest.fixture
def queue(nimbus):
    name = unique_name("q")
    native(nimbus, "PUT", f"/v1/queues/{name}", {"visibility_timeout": 1})
    return name


def test_create_get_update_delete_mapping(lambda_client, make_function, queue):
    fn = unique_name("esm")
    make_function(name=fn)
    resp = lambda_client.create_event_source_mapping(
        FunctionName=fn, EventSourceArn=queue_arn(queue), BatchSize=5,
        MaximumBatchingWindowInSeconds=2, FunctionResponseTypes=["ReportBatchItemFailures"],
        Enabled=False)
    assert http_status(resp) == 202
    uuid = resp["UUID"]
    assert resp["EventSourceArn"] == queue_arn(queue)
    assert resp["FunctionArn"] == f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{fn}"
    assert resp["BatchSize"] == 5
    assert resp["MaximumBatchingWindowInSeconds"] == 2
    assert resp["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert resp["StateTransitionReason"] == "USER_INITIATED"
    assert resp["State"] == "Creating"
    # LastModified is an epoch-seconds timestamp: boto3 parses it into a datetime.
    assert isinstance(resp["LastModified"], datetime.datetime)
    assert abs(resp["LastModified"].timestamp() - time.time()) < 120

    got = lambda_client.get_event_source_mapping(UUID=uuid)
    assert http_status(got) == 200
    assert got["UUID"] == uuid
    assert got["State"] == "Disabled"

    upd = lambda_client.update_event_source_mapping(UUID=uuid, Enabled=True, BatchSize=7,
                                                    FunctionResponseTypes=[])
    assert http_status(upd) == 202
    assert upd["BatchSize"] == 7
    assert upd["FunctionResponseTypes"] == []
    assert lambda_client.get_event_source_mapping(UUID=uuid)["State"] == "Enabled"

    listed = lambda_client.list_event_source_mappings(FunctionName=fn)["EventSourceMappings"]
    assert [m["UUID"] for m in listed] == [uuid]
    by_arn = lambda_client.list_event_source_mappings(EventSourceArn=queue_arn(queue))
    assert [m["UUID"] for m in by_arn["EventSourceMappings"]] == [uuid]

    deleted = lambda_client.delete_event_source_mapping(UUID=uuid)
    assert http_status(deleted) == 202
    assert deleted["State"] == "Deleting"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.get_event_source_mapping(UUID=uuid)
    assert error_code(e.value) == "ResourceNotFoundException"


def test_mapping_errors(lambda_client, make_function, queue):
    fn = unique_name("esmerr")
    make_function(name=fn)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.create_event_source_mapping(FunctionName=unique_name("missing"),
                                                  EventSourceArn=queue_arn(queue))
    assert error_code(e.value) == "ResourceNotFoundException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.create_event_source_mapping(FunctionName=fn, EventSourceArn=queue_arn(queue),
                                                  BatchSize=20000)
    assert error_code(e.value) == "InvalidParameterValueException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.create_event_source_mapping(FunctionName=fn,
                                                  EventSourceArn=queue_arn(unique_name("nope")))
    assert error_code(e.value) == "InvalidParameterValueException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.create_event_source_mapping(FunctionName=fn, EventSourceArn=queue_arn(queue),
                                                  FunctionResponseTypes=["Bogus"])
    assert error_code(e.value) == "InvalidParameterValueException"
    first = lambda_client.create_event_source_mapping(FunctionName=fn,
                                                      EventSourceArn=queue_arn(queue),
                                                      Enabled=False)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.create_event_source_mapping(FunctionName=fn, EventSourceArn=queue_arn(queue))
    assert error_code(e.value) == "ResourceConflictException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.get_event_source_mapping(UUID="00000000-0000-0000-0000-000000000000")
    assert error_code(e.value) == "ResourceNotFoundException"
    lambda_client.delete_event_source_mapping(UUID=first["UUID"])


def test_list_paginates(lambda_client, make_function, queue, nimbus):
    fns = [unique_name("esmpage") for _ in range(3)]
    uuids = []
    for fn in fns:
        make_function(name=fn)
        uuids.append(lambda_client.create_event_source_mapping(
            FunctionName=fn, EventSourceArn=queue_arn(queue), Enabled=False)["UUID"])
    pages = lambda_client.get_paginator("list_event_source_mappings").paginate(
        EventSourceArn=queue_arn(queue), PaginationConfig={"PageSize": 2})
    seen = [m["UUID"] for p in pages for m in p["EventSourceMappings"]]
    assert seen == uuids
    for u in uuids:
        lambda_client.delete_event_source_mapping(UUID=u)


def test_mapping_delivers_queue_messages(lambda_client, make_function, queue, nimbus):
    fn = unique_name("esmrun")
    make_function(name=fn)
    native(nimbus, "POST", f"/v1/queues/{queue}/messages",
           {"entries": [{"body": f"m{i}"} for i in range(5)]})
    m = lambda_client.create_event_source_mapping(FunctionName=fn, EventSourceArn=queue_arn(queue))
    deadline = time.time() + 60
    while time.time() < deadline:
        stats = native(nimbus, "GET", f"/v1/queues/{queue}")["stats"]
        if stats == {"visible": 0, "in_flight": 0, "delayed": 0}:
            break
        time.sleep(0.2)
    assert stats == {"visible": 0, "in_flight": 0, "delayed": 0}
    lambda_client.delete_event_source_mapping(UUID=m["UUID"])


def test_filter_criteria(lambda_client, make_function, queue):
    fn = unique_name("esmfilter")
    make_function(name=fn)
    pattern = json.dumps({"body": {"type": ["order"]}})
    m = lambda_client.create_event_source_mapping(
        FunctionName=fn, EventSourceArn=queue_arn(queue), Enabled=False,
        FilterCriteria={"Filters": [{"Pattern": pattern}]})
    assert m["FilterCriteria"] == {"Filters": [{"Pattern": pattern}]}
    got = lambda_client.get_event_source_mapping(UUID=m["UUID"])
    assert got["FilterCriteria"] == {"Filters": [{"Pattern": pattern}]}
    cleared = lambda_client.update_event_source_mapping(UUID=m["UUID"],
                                                        FilterCriteria={"Filters": []})
    assert "FilterCriteria" not in cleared
    with pytest.raises(botocore.exceptions.ClientError) as e:
        lambda_client.update_event_source_mapping(
            UUID=m["UUID"], FilterCriteria={"Filters": [{"Pattern": '{"body": {"n": [{"bogus": 1}]}}'}]})
    assert error_code(e.value) == "InvalidParameterValueException"
    lambda_client.delete_event_source_mapping(UUID=m["UUID"])


def test_aws_cli_event_source_mappings(nimbus, make_function, queue):
    """`aws lambda create/get/list/update/delete-event-source-mapping` unmodified."""
    fn = unique_name("esmcli")
    make_function(name=fn)

    def aws(*args):
        p = subprocess.run(
            [aws_cli(), "lambda", *args, "--endpoint-url", nimbus.base_url, "--region",
             "us-east-1", "--output", "json"],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, f"{' '.join(args)} failed:\n{p.stderr}\n{p.stdout}"
        return json.loads(p.stdout) if p.stdout.strip() else None

    created = aws("create-event-source-mapping", "--function-name", fn, "--event-source-arn",
                  queue_arn(queue), "--batch-size", "3", "--function-response-types",
                  "ReportBatchItemFailures", "--no-enabled")
    uuid = created["UUID"]
    assert created["BatchSize"] == 3
    assert created["EventSourceArn"] == queue_arn(queue)
    assert aws("get-event-source-mapping", "--uuid", uuid)["State"] == "Disabled"
    listed = aws("list-event-source-mappings", "--function-name", fn)
    assert [m["UUID"] for m in listed["EventSourceMappings"]] == [uuid]
    assert aws("update-event-source-mapping", "--uuid", uuid, "--batch-size", "4")["BatchSize"] == 4
    assert aws("delete-event-source-mapping", "--uuid", uuid)["UUID"] == uuid
