"""SQS compatibility: unmodified boto3 (which speaks SQS's JSON protocol), the AWS CLI, and
raw SigV4-signed query-protocol requests (what older SDKs send) against `nimbus serve`'s
main listener, over the built-in queues.

One server with `--auth on` for the module (the bootstrap admin key signs; a second key
whose policy allows one action on one queue shows AccessDenied); the durability test runs
its own server with `--auth off` and kills it with SIGKILL. botocore does not check
SQS's MD5 digests itself, so this suite recomputes them with its own implementation of
SQS's algorithm (checked against the published vectors) and compares. Run through
tests/e2e/sqs.rs, or by hand:
`cargo build -p nimbus-cli && python3 -m pytest tests/python/test_sqs.py -q`.
"""

import base64
import hashlib
import json
import os
import signal
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET

import boto3
import botocore.exceptions
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from conftest import (ACCOUNT, ROLE, NimbusServer, REGION, aws_cli, make_client, nimbus_bin,
                      python_zip)

NS = "{http://queue.amazonaws.com/doc/2012-11-05/}"


def sqs_client(url, key_id, secret):
    session = boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret,
                                    region_name=REGION)
    return session.client("sqs", endpoint_url=url, config=Config(
        retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=60))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = NimbusServer(nimbus_bin(), tmp_path_factory.mktemp("nimbus-sqs"), auth=True)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def sqs(server):
    return sqs_client(server.base_url, *server.admin_key())


def qname(tag="q"):
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def code_of(excinfo):
    return excinfo.value.response["Error"]["Code"]


# ------------------------------------------------------------------------ SQS's MD5s


def md5_of_attributes(attrs):
    """SQS's MD5OfMessageAttributes, from the request shape {name: {DataType, StringValue|BinaryValue}}."""
    h = hashlib.md5()

    def put(b):
        h.update(struct.pack(">I", len(b)) + b)

    for name in sorted(attrs):
        a = attrs[name]
        put(name.encode())
        put(a["DataType"].encode())
        if "StringValue" in a:
            h.update(b"\x01")
            put(a["StringValue"].encode())
        else:
            h.update(b"\x02")
            v = a["BinaryValue"]
            put(v if isinstance(v, bytes) else base64.b64decode(v))
    return h.hexdigest()


def test_md5_implementation_matches_the_reference_vectors():
    assert md5_of_attributes({"attribName1": {"DataType": "String", "StringValue": "attribValue 1"}}) \
        == "19e27d4e946b072f3f58da80d94fd778"
    assert md5_of_attributes({"binaryAttribute": {"DataType": "Binary",
                                                  "BinaryValue": b"Hello binary world!"}}) \
        == "31a92b15d92f8db860eda32aceb656c3"


# ------------------------------------------------------------------------ the query protocol


def query(server, params, path="/", key=None, raw_body=None):
    """A SigV4-signed query-protocol request; returns (status, root element without namespaces, text)."""
    key_id, secret = key or server.admin_key()
    body = raw_body if raw_body is not None else urllib.parse.urlencode(
        {"Version": "2012-11-05", **params})
    req = AWSRequest(method="POST", url=server.base_url + path, data=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials(key_id, secret), "sqs", REGION).add_auth(req)
    prepared = req.prepare()
    r = urllib.request.Request(prepared.url, data=body.encode(), method="POST",
                               headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    root = ET.fromstring(text)
    for el in root.iter():
        el.tag = el.tag.replace(NS, "")
    return status, root, text


def json_request(server, target, body: bytes):
    """A SigV4-signed JSON-protocol request with a raw body; returns (status, headers, text)."""
    key_id, secret = server.admin_key()
    req = AWSRequest(method="POST", url=server.base_url + "/", data=body, headers={
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": f"AmazonSQS.{target}"})
    SigV4Auth(Credentials(key_id, secret), "sqs", REGION).add_auth(req)
    prepared = req.prepare()
    r = urllib.request.Request(prepared.url, data=body, method="POST", headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


# ------------------------------------------------------------------------ queues


def test_queue_lifecycle_attributes_tags_and_listing(server, sqs):
    prefix = "life-" + uuid.uuid4().hex[:6]
    names = [f"{prefix}-{i}" for i in range(3)]
    url = sqs.create_queue(QueueName=names[0], Attributes={
        "VisibilityTimeout": "45", "MessageRetentionPeriod": "3600", "DelaySeconds": "0",
        "ReceiveMessageWaitTimeSeconds": "0", "MaximumMessageSize": "2048",
    }, tags={"team": "blue"})["QueueUrl"]
    assert url == f"{server.base_url}/{ACCOUNT}/{names[0]}"
    for n in names[1:]:
        sqs.create_queue(QueueName=n)
    # The same name and attributes: the same queue; different attributes: refused.
    assert sqs.create_queue(QueueName=names[0], Attributes={
        "VisibilityTimeout": "45", "MessageRetentionPeriod": "3600",
        "MaximumMessageSize": "2048"})["QueueUrl"] == url
    assert sqs.create_queue(QueueName=names[0])["QueueUrl"] == url
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.create_queue(QueueName=names[0], Attributes={"VisibilityTimeout": "46"})
    assert code_of(e) == "QueueAlreadyExists"
    assert sqs.get_queue_url(QueueName=names[0])["QueueUrl"] == url

    listed = sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"]
    assert listed == [f"{server.base_url}/{ACCOUNT}/{n}" for n in names]
    page1 = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2)
    assert len(page1["QueueUrls"]) == 2 and page1["NextToken"]
    page2 = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=2, NextToken=page1["NextToken"])
    assert page2["QueueUrls"] == listed[2:] and "NextToken" not in page2
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix="nothing-" + prefix)

    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "45"
    assert attrs["MessageRetentionPeriod"] == "3600"
    assert attrs["MaximumMessageSize"] == "2048"
    assert attrs["QueueArn"] == f"arn:aws:sqs:{REGION}:{ACCOUNT}:{names[0]}"
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert abs(int(attrs["CreatedTimestamp"]) - time.time()) < 60
    default = sqs.get_queue_attributes(QueueUrl=listed[1], AttributeNames=["All"])["Attributes"]
    assert default["MaximumMessageSize"] == "1048576"
    assert default["VisibilityTimeout"] == "30"
    assert default["MessageRetentionPeriod"] == "345600"
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "2",
                                                       "ReceiveMessageWaitTimeSeconds": "1"})
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "DelaySeconds", "ReceiveMessageWaitTimeSeconds"])["Attributes"]
    assert got == {"DelaySeconds": "2", "ReceiveMessageWaitTimeSeconds": "1"}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "43201"})
    assert code_of(e) == "InvalidAttributeValue"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"NoSuchThing": "1"})
    assert code_of(e) == "InvalidAttributeName"

    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "blue"}
    sqs.tag_queue(QueueUrl=url, Tags={"env": "test", "team": "green"})
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "green", "env": "test"}
    sqs.untag_queue(QueueUrl=url, TagKeys=["team"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "test"}

    # Counts, purge, delete.
    sqs.send_message(QueueUrl=listed[1], MessageBody="one")
    sqs.send_message(QueueUrl=listed[1], MessageBody="two", DelaySeconds=60)
    sqs.receive_message(QueueUrl=listed[1])
    sqs.send_message(QueueUrl=listed[1], MessageBody="three")
    counts = sqs.get_queue_attributes(QueueUrl=listed[1], AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed"])["Attributes"]
    assert counts == {"ApproximateNumberOfMessages": "1", "ApproximateNumberOfMessagesNotVisible": "1",
                      "ApproximateNumberOfMessagesDelayed": "1"}
    sqs.purge_queue(QueueUrl=listed[1])
    assert sqs.get_queue_attributes(QueueUrl=listed[1], AttributeNames=[
        "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"] == "0"
    for u in listed:
        sqs.delete_queue(QueueUrl=u)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as e:
        sqs.get_queue_url(QueueName=names[0])
    assert code_of(e) == "AWS.SimpleQueueService.NonExistentQueue"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_unsupported_and_bad_names_are_refused_clearly(sqs):
    url = sqs.create_queue(QueueName=qname())["QueueUrl"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.add_permission(QueueUrl=url, Label="l", AWSAccountIds=["123456789012"],
                           Actions=["SendMessage"])
    assert code_of(e) == "AWS.SimpleQueueService.UnsupportedOperation"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.create_queue(QueueName="bad name!")
    assert code_of(e) == "InvalidParameterValue"


# ------------------------------------------------------------------------ FIFO queues


def fifo_queue(sqs, tag="fifo", **attrs):
    return sqs.create_queue(QueueName=qname(tag) + ".fifo", Attributes={
        "FifoQueue": "true", **{k: str(v) for k, v in attrs.items()}})["QueueUrl"]


def test_fifo_queue_attributes_and_their_rules(sqs):
    url = fifo_queue(sqs, ContentBasedDeduplication="true")
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["FifoQueue"] == "true"
    assert attrs["ContentBasedDeduplication"] == "true"
    assert attrs["DeduplicationScope"] == "queue"
    assert attrs["FifoThroughputLimit"] == "perQueue"
    assert attrs["QueueArn"].endswith(".fifo")
    # The same again is the same queue; FifoQueue cannot be set afterwards.
    assert sqs.create_queue(
        QueueName=url.rsplit("/", 1)[1], Attributes={"FifoQueue": "true"})["QueueUrl"] == url
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"FifoQueue": "false"})
    assert code_of(e) == "InvalidAttributeName"
    sqs.set_queue_attributes(QueueUrl=url, Attributes={
        "ContentBasedDeduplication": "false", "DeduplicationScope": "messageGroup",
        "FifoThroughputLimit": "perMessageGroupId"})
    got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit"])["Attributes"]
    assert got == {"ContentBasedDeduplication": "false", "DeduplicationScope": "messageGroup",
                   "FifoThroughputLimit": "perMessageGroupId"}
    # perMessageGroupId needs the messageGroup scope.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fifo_queue(sqs, FifoThroughputLimit="perMessageGroupId")
    assert code_of(e) == "InvalidAttributeValue"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fifo_queue(sqs, DeduplicationScope="everywhere")
    assert code_of(e) == "InvalidAttributeValue"
    # The name and FifoQueue go together.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.create_queue(QueueName=qname("nofifo"), Attributes={"FifoQueue": "true"})
    assert code_of(e) == "InvalidParameterValue"
    assert "must end with .fifo" in str(e.value)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.create_queue(QueueName=qname("fifo") + ".fifo")
    assert code_of(e) == "InvalidParameterValue"
    # A standard queue has no FIFO attributes, neither to set nor to report.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.create_queue(QueueName=qname(), Attributes={"ContentBasedDeduplication": "true"})
    assert code_of(e) == "InvalidAttributeName"
    std = sqs.create_queue(QueueName=qname())["QueueUrl"]
    assert "FifoQueue" not in sqs.get_queue_attributes(
        QueueUrl=std, AttributeNames=["All"])["Attributes"]
    # A FIFO queue's dead-letter queue is a FIFO queue.
    std_arn = sqs.get_queue_attributes(QueueUrl=std, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fifo_queue(sqs, RedrivePolicy=json.dumps({"deadLetterTargetArn": std_arn,
                                                  "maxReceiveCount": 1}))
    assert code_of(e) == "InvalidParameterValue"


def test_fifo_send_rules_sequence_numbers_and_deduplication(sqs):
    url = fifo_queue(sqs)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageDeduplicationId="d")
    assert code_of(e) == "MissingParameter"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g")
    assert code_of(e) == "InvalidParameterValue"
    assert "ContentBasedDeduplication" in str(e.value)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g",
                         MessageDeduplicationId="d", DelaySeconds=5)
    assert code_of(e) == "InvalidParameterValue"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g" * 129,
                         MessageDeduplicationId="d")
    assert code_of(e) == "InvalidParameterValue"
    # Standard queues refuse the FIFO parameters.
    std = sqs.create_queue(QueueName=qname())["QueueUrl"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=std, MessageBody="x", MessageDeduplicationId="d")
    assert code_of(e) == "InvalidParameterValue"

    first = sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="g",
                             MessageDeduplicationId="d1")
    seq = first["SequenceNumber"]
    assert seq.isdigit() and len(seq) >= 20 and int(seq) < 2 ** 128
    # The same deduplication id: 200 with the original message id and number, not stored.
    dup = sqs.send_message(QueueUrl=url, MessageBody="other body", MessageGroupId="g2",
                           MessageDeduplicationId="d1")
    assert (dup["MessageId"], dup["SequenceNumber"]) == (first["MessageId"], seq)
    batch = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": f"e{i}", "MessageBody": f"b{i}", "MessageGroupId": "g",
         "MessageDeduplicationId": f"b{i}"} for i in range(5)] + [
        {"Id": "again", "MessageBody": "b0 again", "MessageGroupId": "g",
         "MessageDeduplicationId": "b0"}])
    assert not batch.get("Failed"), batch
    by_id = {e["Id"]: e for e in batch["Successful"]}
    numbers = [int(by_id[f"e{i}"]["SequenceNumber"]) for i in range(5)]
    assert numbers == sorted(numbers) and numbers[0] > int(seq)
    assert by_id["again"]["MessageId"] == by_id["e0"]["MessageId"]
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])
    msgs = got["Messages"]
    assert [m["Body"] for m in msgs] == ["one", "b0", "b1", "b2", "b3", "b4"]
    assert msgs[0]["Attributes"]["MessageGroupId"] == "g"
    assert msgs[0]["Attributes"]["MessageDeduplicationId"] == "d1"
    assert msgs[0]["Attributes"]["SequenceNumber"] == seq
    for m in msgs:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    # Deleted, the id is still remembered (for 5 minutes: see the store's unit tests).
    again = sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="g",
                             MessageDeduplicationId="d1")
    assert again["MessageId"] == first["MessageId"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)

    # Content-based: the body's SHA-256; an explicit id wins over it.
    content = fifo_queue(sqs, "content", ContentBasedDeduplication="true")
    a = sqs.send_message(QueueUrl=content, MessageBody="same", MessageGroupId="g")
    b = sqs.send_message(QueueUrl=content, MessageBody="same", MessageGroupId="h")
    c = sqs.send_message(QueueUrl=content, MessageBody="same", MessageGroupId="g",
                         MessageDeduplicationId="explicit")
    assert a["MessageId"] == b["MessageId"] != c["MessageId"]
    got = sqs.receive_message(QueueUrl=content, MaxNumberOfMessages=10,
                              MessageSystemAttributeNames=["MessageDeduplicationId"])["Messages"]
    assert [m["Attributes"]["MessageDeduplicationId"] for m in got] == [
        hashlib.sha256(b"same").hexdigest(), "explicit"]

    # Scope messageGroup: the same id in two groups is two messages.
    scoped = fifo_queue(sqs, "scoped", DeduplicationScope="messageGroup")
    x = sqs.send_message(QueueUrl=scoped, MessageBody="x", MessageGroupId="a",
                         MessageDeduplicationId="same")
    y = sqs.send_message(QueueUrl=scoped, MessageBody="y", MessageGroupId="b",
                         MessageDeduplicationId="same")
    z = sqs.send_message(QueueUrl=scoped, MessageBody="z", MessageGroupId="a",
                         MessageDeduplicationId="same")
    assert x["MessageId"] != y["MessageId"] and z["MessageId"] == x["MessageId"]


def test_fifo_order_per_group_with_many_groups_and_concurrent_receivers(server):
    """20 groups of 10 messages, 6 receivers at once, some messages failed (not deleted,
    so redelivered after the 2 s visibility timeout): no group ever has two receivers, and
    each group's messages are processed exactly once, in order."""
    key = server.admin_key()
    sqs = sqs_client(server.base_url, *key)
    url = fifo_queue(sqs, "order", VisibilityTimeout=2)
    groups, per_group = 20, 10
    entries = [(f"g{g}", i) for i in range(per_group) for g in range(groups)]
    for n in range(0, len(entries), 10):
        chunk = entries[n:n + 10]
        r = sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": f"m{j}", "MessageBody": f"{g}:{i}", "MessageGroupId": g,
             "MessageDeduplicationId": f"{g}-{i}"} for j, (g, i) in enumerate(chunk)])
        assert not r.get("Failed"), r
    lock = threading.Lock()
    in_flight = {}       # group -> receiver holding it
    processed = {f"g{g}": [] for g in range(groups)}
    failed_once = set()  # (group, index) failed on purpose once
    errors = []

    def receiver(n):
        client = sqs_client(server.base_url, *key)
        deadline = time.time() + 90
        while time.time() < deadline:
            with lock:
                if sum(len(v) for v in processed.values()) == groups * per_group:
                    return
            got = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                         AttributeNames=["All"]).get("Messages", [])
            by_group = {}
            for m in got:
                by_group.setdefault(m["Attributes"]["MessageGroupId"], []).append(m)
            with lock:
                for g, ms in by_group.items():
                    if g in in_flight:
                        errors.append(f"group {g} given to {n} while {in_flight[g]} holds it")
                    in_flight[g] = n
                    seqs = [int(m["Attributes"]["SequenceNumber"]) for m in ms]
                    if seqs != sorted(seqs):
                        errors.append(f"group {g} out of order in one receive: {seqs}")
            for g, ms in by_group.items():
                done = []
                for m in ms:
                    index = int(m["Body"].split(":")[1])
                    if index % 4 == 3 and (g, index) not in failed_once:
                        with lock:
                            failed_once.add((g, index))
                        break  # failed: it and the rest of its group come back later
                    done.append(m)
                with lock:
                    processed[g].extend(int(m["Body"].split(":")[1]) for m in done)
                    del in_flight[g]
                for m in done:
                    client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                if len(done) < len(ms):
                    pass  # the rest stays in flight until its visibility timeout

    threads = [threading.Thread(target=receiver, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    for g, seen in processed.items():
        assert seen == list(range(per_group)), (g, seen)
    assert len(failed_once) == groups * 2


def test_fifo_receive_request_attempt_id(sqs):
    url = fifo_queue(sqs, "attempt", VisibilityTimeout=30)
    for body, group in [("a1", "a"), ("b1", "b"), ("b2", "b")]:
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId=group,
                         MessageDeduplicationId=body)
    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2,
                                ReceiveRequestAttemptId="attempt-1")["Messages"]
    assert [m["Body"] for m in first] == ["a1", "b1"]
    # A retry with the same id (the answer was lost): the same messages and handles.
    retry = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2,
                                ReceiveRequestAttemptId="attempt-1")["Messages"]
    assert [(m["MessageId"], m["ReceiptHandle"]) for m in retry] == \
        [(m["MessageId"], m["ReceiptHandle"]) for m in first]
    # Another id gets nothing: both groups are in flight.
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                 ReceiveRequestAttemptId="attempt-2")
    # Once one of them is deleted, the same id receives anew.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"])
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first[1]["ReceiptHandle"],
                                  VisibilityTimeout=0)
    fresh = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                ReceiveRequestAttemptId="attempt-1")["Messages"]
    assert [m["Body"] for m in fresh] == ["b1", "b2"]
    assert fresh[0]["ReceiptHandle"] != first[1]["ReceiptHandle"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.receive_message(QueueUrl=url, ReceiveRequestAttemptId="x" * 129)
    assert code_of(e) == "InvalidParameterValue"


def test_fifo_dead_letter_queue_and_move_back(sqs):
    dlq = fifo_queue(sqs, "fdlq")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    src = fifo_queue(sqs, "fsrc", VisibilityTimeout=0, RedrivePolicy=json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1}))
    for body in ["poison", "next", "last"]:
        sqs.send_message(QueueUrl=src, MessageBody=body, MessageGroupId="g",
                         MessageDeduplicationId=body)
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=src)["Messages"]] == ["poison"]
    # Received once already: the head is dead-lettered and its group goes on, in order.
    got = sqs.receive_message(QueueUrl=src, VisibilityTimeout=30)["Messages"]
    assert [m["Body"] for m in got] == ["next"]
    sqs.delete_message(QueueUrl=src, ReceiptHandle=got[0]["ReceiptHandle"])
    dead = sqs.receive_message(QueueUrl=dlq, AttributeNames=["All"], VisibilityTimeout=0)
    [d] = dead["Messages"]
    assert d["Body"] == "poison" and d["Attributes"]["MessageGroupId"] == "g"
    # StartMessageMoveTask moves it back to the FIFO source, group and number kept.
    sqs.start_message_move_task(SourceArn=dlq_arn)
    back = sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10, AttributeNames=["All"],
                               VisibilityTimeout=30)["Messages"]
    assert [m["Body"] for m in back] == ["poison", "last"]
    assert back[0]["Attributes"]["MessageGroupId"] == "g"
    assert back[0]["Attributes"]["SequenceNumber"] == d["Attributes"]["SequenceNumber"]
    # Dead letters of a FIFO queue move to FIFO queues only.
    sqs.send_message(QueueUrl=src, MessageBody="again", MessageGroupId="h",
                     MessageDeduplicationId="again")
    sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10, VisibilityTimeout=0)
    std = sqs.create_queue(QueueName=qname())["QueueUrl"]
    std_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{std.rsplit('/', 1)[1]}"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=std_arn)
    assert code_of(e) == "InvalidParameterValue"


def test_fifo_over_the_query_protocol(server, sqs):
    name = qname("qfifo") + ".fifo"
    status, root, text = query(server, {
        "Action": "CreateQueue", "QueueName": name,
        "Attribute.1.Name": "FifoQueue", "Attribute.1.Value": "true",
        "Attribute.2.Name": "ContentBasedDeduplication", "Attribute.2.Value": "true"})
    assert status == 200, text
    url = root.find("CreateQueueResult/QueueUrl").text
    status, root, text = query(server, {"Action": "SendMessage", "QueueUrl": url,
                                        "MessageBody": "first", "MessageGroupId": "g1"})
    assert status == 200, text
    seq = root.find("SendMessageResult/SequenceNumber").text
    assert seq.isdigit(), text
    status, root, text = query(server, {
        "Action": "SendMessageBatch", "QueueUrl": url,
        "SendMessageBatchRequestEntry.1.Id": "a", "SendMessageBatchRequestEntry.1.MessageBody": "second",
        "SendMessageBatchRequestEntry.1.MessageGroupId": "g1",
        "SendMessageBatchRequestEntry.1.MessageDeduplicationId": "dd"})
    assert status == 200, text
    assert root.find("SendMessageBatchResult/SendMessageBatchResultEntry/SequenceNumber").text
    status, root, text = query(server, {"Action": "SendMessage", "QueueUrl": url,
                                        "MessageBody": "no group"})
    assert status == 400 and root.find("Error/Code").text == "MissingParameter", text
    status, root, text = query(server, {
        "Action": "ReceiveMessage", "QueueUrl": url, "MaxNumberOfMessages": "10",
        "AttributeName.1": "All", "ReceiveRequestAttemptId": "q-attempt"})
    assert status == 200, text
    msgs = root.findall("ReceiveMessageResult/Message")
    assert [m.find("Body").text for m in msgs] == ["first", "second"], text
    sys_attrs = {a.find("Name").text: a.find("Value").text for a in msgs[0].findall("Attribute")}
    assert sys_attrs["MessageGroupId"] == "g1"
    assert sys_attrs["SequenceNumber"] == seq
    assert sys_attrs["MessageDeduplicationId"] == hashlib.sha256(b"first").hexdigest()
    status, root, text = query(server, {"Action": "GetQueueAttributes", "QueueUrl": url,
                                        "AttributeName.1": "FifoQueue"})
    assert {a.find("Name").text: a.find("Value").text for a in root.findall(
        "GetQueueAttributesResult/Attribute")} == {"FifoQueue": "true"}, text
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ContentBasedDeduplication"])[
        "Attributes"] == {"ContentBasedDeduplication": "true"}


# ------------------------------------------------------------------------ messages


def test_send_receive_delete_with_attributes_and_md5s(sqs):
    url = sqs.create_queue(QueueName=qname("msg"))["QueueUrl"]
    attrs = {
        "s": {"DataType": "String", "StringValue": "héllo"},
        "n": {"DataType": "Number", "StringValue": "42.5"},
        "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xffbytes"},
        "custom.x": {"DataType": "String.custom", "StringValue": "labelled"},
    }
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    body = "body with ünïcode, \t tabs and \U0001F600"
    t0 = int(time.time() * 1000)
    sent = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attrs,
                            MessageSystemAttributes={"AWSTraceHeader": {
                                "DataType": "String", "StringValue": trace}})
    assert sent["MD5OfMessageBody"] == hashlib.md5(body.encode()).hexdigest()
    assert sent["MD5OfMessageAttributes"] == md5_of_attributes(attrs)
    assert sent["MD5OfMessageSystemAttributes"] == md5_of_attributes(
        {"AWSTraceHeader": {"DataType": "String", "StringValue": trace}})
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                              MessageSystemAttributeNames=["All"])["Messages"]
    assert len(got) == 1
    m = got[0]
    assert m["MessageId"] == sent["MessageId"]
    assert m["Body"] == body
    assert m["MD5OfBody"] == hashlib.md5(body.encode()).hexdigest()
    assert m["MessageAttributes"] == attrs
    assert m["MD5OfMessageAttributes"] == md5_of_attributes(attrs)
    a = m["Attributes"]
    assert a["ApproximateReceiveCount"] == "1"
    assert t0 - 1000 <= int(a["SentTimestamp"]) <= int(a["ApproximateFirstReceiveTimestamp"])
    assert a["AWSTraceHeader"] == trace
    # SenderId: the access key that sent it.
    assert a["SenderId"] == sqs._request_signer._credentials.access_key
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    # Deleting again with the same (now stale) handle is fine, as on SQS.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    # Selecting attributes by name and prefix; the MD5 covers what is returned.
    sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes=attrs)
    m = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["custom.*", "s"],
                            AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    chosen = {k: attrs[k] for k in ("custom.x", "s")}
    assert m["MessageAttributes"] == chosen
    assert m["MD5OfMessageAttributes"] == md5_of_attributes(chosen)
    assert m["Attributes"] == {"ApproximateReceiveCount": "1"}
    m2 = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)
    assert "Messages" not in m2
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def test_batches(sqs):
    url = sqs.create_queue(QueueName=qname("batch"))["QueueUrl"]
    r = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "one", "MessageAttributes": {
            "k": {"DataType": "String", "StringValue": "v"}}},
        {"Id": "b", "MessageBody": "two", "DelaySeconds": 0},
        {"Id": "bad", "MessageBody": "bell \x07"},
    ])
    assert sorted(s["Id"] for s in r["Successful"]) == ["a", "b"]
    by_id = {s["Id"]: s for s in r["Successful"]}
    assert by_id["a"]["MD5OfMessageBody"] == hashlib.md5(b"one").hexdigest()
    assert by_id["a"]["MD5OfMessageAttributes"] == md5_of_attributes(
        {"k": {"DataType": "String", "StringValue": "v"}})
    assert r["Failed"] == [{"Id": "bad", "SenderFault": True, "Code": "InvalidMessageContents",
                            "Message": r["Failed"][0]["Message"]}]
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)["Messages"]
    assert sorted(m["Body"] for m in got) == ["one", "two"]
    handles = {m["Body"]: m["ReceiptHandle"] for m in got}
    r = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "one", "ReceiptHandle": handles["one"], "VisibilityTimeout": 0},
        {"Id": "junk", "ReceiptHandle": "garbage", "VisibilityTimeout": 0},
    ])
    assert [s["Id"] for s in r["Successful"]] == ["one"]
    assert r["Failed"][0]["Id"] == "junk" and r["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in again] == ["one"]
    r = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": "x1", "ReceiptHandle": again[0]["ReceiptHandle"]},
        {"Id": "x2", "ReceiptHandle": handles["two"]},
        {"Id": "x3", "ReceiptHandle": "not-a-handle"},
    ])
    assert sorted(s["Id"] for s in r["Successful"]) == ["x1", "x2"]
    assert r["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == "0"
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "0"
    for entries, code in [
        ([], "AWS.SimpleQueueService.EmptyBatchRequest"),
        ([{"Id": "same", "MessageBody": "1"}, {"Id": "same", "MessageBody": "2"}],
         "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"),
        ([{"Id": str(i), "MessageBody": "m"} for i in range(11)],
         "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"),
        ([{"Id": "bad id!", "MessageBody": "m"}], "AWS.SimpleQueueService.InvalidBatchEntryId"),
        ([{"Id": "big1", "MessageBody": "x" * 600_000}, {"Id": "big2", "MessageBody": "y" * 600_000}],
         "AWS.SimpleQueueService.BatchRequestTooLong"),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert code_of(e) == code, entries[:1]


def test_long_polling_gets_a_message_sent_meanwhile(sqs):
    url = sqs.create_queue(QueueName=qname("poll"))["QueueUrl"]
    t0 = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert time.monotonic() - t0 >= 0.9
    result = {}

    def waiter():
        t = time.monotonic()
        result["r"] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10)
        result["took"] = time.monotonic() - t

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(1.0)
    sqs.send_message(QueueUrl=url, MessageBody="wake up")
    th.join(15)
    assert [m["Body"] for m in result["r"]["Messages"]] == ["wake up"]
    assert 0.9 <= result["took"] < 5, result["took"]
    # The queue's ReceiveMessageWaitTimeSeconds is the default wait.
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"ReceiveMessageWaitTimeSeconds": "1"})
    t0 = time.monotonic()
    sqs.receive_message(QueueUrl=url)
    assert time.monotonic() - t0 >= 0.9
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.receive_message(QueueUrl=url, WaitTimeSeconds=21)
    assert code_of(e) == "InvalidParameterValue"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11)
    assert code_of(e) == "InvalidParameterValue"


def test_visibility_timeout_expiry_and_delay(sqs):
    url = sqs.create_queue(QueueName=qname("vis"), Attributes={"VisibilityTimeout": "2"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="again")
    first = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"][0]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    time.sleep(2.3)
    second = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"][0]
    assert second["MessageId"] == first["MessageId"]
    assert second["ReceiptHandle"] != first["ReceiptHandle"]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    assert second["Attributes"]["ApproximateFirstReceiveTimestamp"] == \
        first["Attributes"]["ApproximateFirstReceiveTimestamp"]
    # ChangeMessageVisibility: hidden for longer, then visible at once.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"],
                                  VisibilityTimeout=60)
    time.sleep(1.2)
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"],
                                  VisibilityTimeout=0)
    third = sqs.receive_message(QueueUrl=url)["Messages"][0]
    assert third["MessageId"] == first["MessageId"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=third["ReceiptHandle"])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=third["ReceiptHandle"],
                                      VisibilityTimeout=5)
    assert code_of(e) == "AWS.SimpleQueueService.MessageNotInflight"
    # A message delay, and the queue's default delay.
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=2)
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"][0]["Body"] == "later"
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "5"})
    sqs.send_message(QueueUrl=url, MessageBody="queue delay")
    delayed = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessagesDelayed"])["Attributes"]
    assert delayed == {"ApproximateNumberOfMessagesDelayed": "1"}


def test_dead_letter_queue_and_message_move_task(server, sqs):
    dlq = sqs.create_queue(QueueName=qname("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    src = sqs.create_queue(QueueName=qname("src"), Attributes={
        "VisibilityTimeout": "0", "RedrivePolicy": policy})["QueueUrl"]
    src_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{src.rsplit('/', 1)[1]}"
    got = sqs.get_queue_attributes(QueueUrl=src, AttributeNames=["RedrivePolicy"])["Attributes"]
    assert json.loads(got["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [src]
    assert sqs.list_dead_letter_source_queues(QueueUrl=src)["queueUrls"] == []
    sqs.send_message(QueueUrl=src, MessageBody="poison",
                     MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})
    for _ in range(2):
        assert sqs.receive_message(QueueUrl=src)["Messages"][0]["Body"] == "poison"
    # The third receive moves it to the dead-letter queue instead.
    assert "Messages" not in sqs.receive_message(QueueUrl=src)
    dead = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])
    assert dead["Attributes"]["ApproximateNumberOfMessages"] == "1"
    # StartMessageMoveTask moves it back to its source, attributes and all.
    task = sqs.start_message_move_task(SourceArn=dlq_arn)
    assert task["TaskHandle"]
    back = sqs.receive_message(QueueUrl=src, MessageAttributeNames=["All"],
                               AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    assert back["Body"] == "poison"
    assert back["MessageAttributes"] == {"k": {"DataType": "String", "StringValue": "v"}}
    assert back["Attributes"]["ApproximateReceiveCount"] == "1"
    sqs.delete_message(QueueUrl=src, ReceiptHandle=back["ReceiptHandle"])
    # Paced: one message a second, listed while it runs, cancelled, then finished at once.
    for i in range(3):
        sqs.send_message(QueueUrl=src, MessageBody=f"poison {i}")
    for _ in range(3):
        sqs.receive_message(QueueUrl=src, MaxNumberOfMessages=10)
    in_dlq = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])
    assert in_dlq["Attributes"]["ApproximateNumberOfMessages"] == "3"
    paced = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=src_arn,
                                        MaxNumberOfMessagesPerSecond=1)
    [running] = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
    assert running["Status"] == "RUNNING", running
    assert running["TaskHandle"] == paced["TaskHandle"]
    assert running["DestinationArn"] == src_arn
    assert running["MaxNumberOfMessagesPerSecond"] == 1
    # One moved at once, the next a second later (two on a very slow machine).
    assert running["ApproximateNumberOfMessagesMoved"] in (1, 2), running
    assert running["ApproximateNumberOfMessagesToMove"] == 3
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.start_message_move_task(SourceArn=dlq_arn)
    assert code_of(e) == "InvalidParameterValue"
    assert sqs.cancel_message_move_task(TaskHandle=paced["TaskHandle"])[
        "ApproximateNumberOfMessagesMoved"] in (1, 2)
    deadline = time.time() + 10
    while time.time() < deadline:
        [cancelled] = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
        if cancelled["Status"] != "CANCELLING":
            break
        time.sleep(0.2)
    assert cancelled["Status"] == "CANCELLED", cancelled
    moved = cancelled["ApproximateNumberOfMessagesMoved"]
    assert moved in (1, 2), cancelled
    assert "TaskHandle" not in cancelled
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.cancel_message_move_task(TaskHandle=paced["TaskHandle"])
    assert code_of(e) == "InvalidParameterValue"
    in_dlq = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])
    assert in_dlq["Attributes"]["ApproximateNumberOfMessages"] == str(3 - moved)
    sqs.start_message_move_task(SourceArn=dlq_arn)
    tasks = sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=10)["Results"]
    assert [t["Status"] for t in tasks] == ["COMPLETED", "CANCELLED", "COMPLETED"], tasks
    assert tasks[0]["ApproximateNumberOfMessagesMoved"] == 3 - moved
    in_dlq = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])
    assert in_dlq["Attributes"]["ApproximateNumberOfMessages"] == "0"
    status, root, text = query(server, {"Action": "ListMessageMoveTasks", "SourceArn": dlq_arn,
                                        "MaxResults": "1"})
    assert [e.find("Status").text for e in root.findall(
        "ListMessageMoveTasksResult/ListMessageMoveTasksResultEntry")] == ["COMPLETED"], text
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.start_message_move_task(SourceArn=src_arn)
    assert code_of(e) == "InvalidParameterValue"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.start_message_move_task(SourceArn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:nope-{uuid.uuid4().hex}")
    assert code_of(e) == "ResourceNotFoundException"
    # A dead-letter queue that allows no sources refuses a redrive policy naming it.
    closed = sqs.create_queue(QueueName=qname("closed"), Attributes={
        "RedriveAllowPolicy": json.dumps({"redrivePermission": "denyAll"})})["QueueUrl"]
    closed_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{closed.rsplit('/', 1)[1]}"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.create_queue(QueueName=qname("src2"), Attributes={"RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": closed_arn, "maxReceiveCount": 1})})
    assert code_of(e) == "InvalidParameterValue"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=src, Attributes={"RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:missing", "maxReceiveCount": 1})})
    assert code_of(e) == "InvalidParameterValue"


# ------------------------------------------------------------------------ refusals


def test_sizes_receipts_and_malformed_bodies(server, sqs):
    url = sqs.create_queue(QueueName=qname("size"), Attributes={"MaximumMessageSize": "1024"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x" * 1024)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x" * 1025)
    assert code_of(e) == "InvalidParameterValue"
    assert "Message must be shorter than 1024 bytes" in str(e.value)
    # Attributes count towards the size.
    with pytest.raises(botocore.exceptions.ClientError):
        sqs.send_message(QueueUrl=url, MessageBody="x" * 1000, MessageAttributes={
            "pad": {"DataType": "String", "StringValue": "y" * 100}})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "1023"})
    assert code_of(e) == "InvalidAttributeValue"
    # The default is SQS's 1 MiB.
    big = sqs.create_queue(QueueName=qname("big"))["QueueUrl"]
    sqs.send_message(QueueUrl=big, MessageBody="m" * (1024 * 1024))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=big, MessageBody="m" * (1024 * 1024 + 1))
    assert code_of(e) == "InvalidParameterValue"
    got = sqs.receive_message(QueueUrl=big)["Messages"][0]
    assert len(got["Body"]) == 1024 * 1024
    sqs.purge_queue(QueueUrl=big)

    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.delete_message(QueueUrl=url, ReceiptHandle="garbage")
    assert code_of(e) == "ReceiptHandleIsInvalid"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle="garbage", VisibilityTimeout=1)
    assert code_of(e) == "ReceiptHandleIsInvalid"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="nul \x00 inside")
    assert code_of(e) == "InvalidMessageContents"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="m", MessageAttributes={
            "AWS.reserved": {"DataType": "String", "StringValue": "v"}})
    assert code_of(e) == "InvalidParameterValue"

    # Malformed bodies: a clear error in each protocol's shape, and nothing changes.
    before = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    status, headers, text = json_request(server, "SendMessage", b'{"QueueUrl": "' + url.encode() + b'", "MessageBody": ')
    assert status == 400, text
    assert json.loads(text)["__type"] == "com.amazonaws.sqs#SerializationException"
    assert headers.get("x-amzn-query-error") == "SerializationException;Sender", headers
    assert "not valid JSON" in json.loads(text)["message"]
    status, headers, text = json_request(server, "SendMessage", b'{"MessageBody": "no queue"}')
    assert status == 400
    assert headers.get("x-amzn-query-error") == "MissingParameter;Sender", headers
    status, headers, text = json_request(server, "NoSuchOperation", b"{}")
    assert status == 400 and "InvalidAction" in text
    status, root, text = query(server, {}, raw_body="Version=2012-11-05&QueueUrl=" + url)
    assert status == 400, text
    assert root.find("Error/Code").text == "MalformedQueryString"
    status, root, text = query(server, {}, raw_body="Action=SendMessage&MessageBody=x&QueueUrl="
                               + urllib.parse.quote(url) + "&MessageAttribute.x.Name=a")
    assert status == 400, text
    after = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    assert after["Attributes"] == before["Attributes"]


# ------------------------------------------------------------------------ the query protocol


def test_query_protocol(server, sqs):
    name = qname("query")
    status, root, text = query(server, {
        "Action": "CreateQueue", "QueueName": name,
        "Attribute.1.Name": "VisibilityTimeout", "Attribute.1.Value": "40",
        "Tag.1.Key": "via", "Tag.1.Value": "query"})
    assert status == 200, text
    assert root.tag == "CreateQueueResponse"
    url = root.find("CreateQueueResult/QueueUrl").text
    assert url == f"{server.base_url}/{ACCOUNT}/{name}"
    assert root.find("ResponseMetadata/RequestId").text
    # The same queue is visible to the JSON protocol.
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"via": "query"}
    status, root, _ = query(server, {"Action": "ListQueueTags", "QueueUrl": url})
    assert [(t.find("Key").text, t.find("Value").text)
            for t in root.findall("ListQueueTagsResult/Tag")] == [("via", "query")]

    status, root, _ = query(server, {"Action": "GetQueueUrl", "QueueName": name})
    assert root.find("GetQueueUrlResult/QueueUrl").text == url
    status, root, _ = query(server, {"Action": "ListQueues", "QueueNamePrefix": name})
    assert [u.text for u in root.findall("ListQueuesResult/QueueUrl")] == [url]

    attrs = {"color": {"DataType": "String", "StringValue": "<red & blue>"},
             "blob": {"DataType": "Binary", "BinaryValue": base64.b64encode(b"\x01\x02").decode()}}
    status, root, text = query(server, {
        "Action": "SendMessage", "QueueUrl": url, "MessageBody": "via <query> & form",
        "MessageAttribute.1.Name": "color", "MessageAttribute.1.Value.DataType": "String",
        "MessageAttribute.1.Value.StringValue": "<red & blue>",
        "MessageAttribute.2.Name": "blob", "MessageAttribute.2.Value.DataType": "Binary",
        "MessageAttribute.2.Value.BinaryValue": attrs["blob"]["BinaryValue"]})
    assert status == 200, text
    result = root.find("SendMessageResult")
    assert result.find("MD5OfMessageBody").text == hashlib.md5(b"via <query> & form").hexdigest()
    assert result.find("MD5OfMessageAttributes").text == md5_of_attributes(attrs)
    assert result.find("MessageId").text

    status, root, text = query(server, {
        "Action": "ReceiveMessage", "QueueUrl": url, "AttributeName.1": "All",
        "MessageAttributeName.1": "All", "MaxNumberOfMessages": "5"})
    assert status == 200, text
    msgs = root.findall("ReceiveMessageResult/Message")
    assert len(msgs) == 1
    m = msgs[0]
    assert m.find("Body").text == "via <query> & form"
    sys_attrs = {a.find("Name").text: a.find("Value").text for a in m.findall("Attribute")}
    assert sys_attrs["ApproximateReceiveCount"] == "1"
    got_attrs = {a.find("Name").text: {c.tag: c.text for c in a.find("Value")}
                 for a in m.findall("MessageAttribute")}
    assert got_attrs == attrs
    assert m.find("MD5OfMessageAttributes").text == md5_of_attributes(attrs)

    # Posted to the queue URL's path, the queue comes from the path.
    status, root, text = query(server, {"Action": "DeleteMessage",
                                        "ReceiptHandle": m.find("ReceiptHandle").text},
                               path=f"/{ACCOUNT}/{name}")
    assert status == 200, text
    assert root.tag == "DeleteMessageResponse"
    status, root, _ = query(server, {"Action": "GetQueueAttributes", "QueueUrl": url,
                                     "AttributeName.1": "ApproximateNumberOfMessages",
                                     "AttributeName.2": "VisibilityTimeout"})
    got = {a.find("Name").text: a.find("Value").text
           for a in root.findall("GetQueueAttributesResult/Attribute")}
    assert got == {"ApproximateNumberOfMessages": "0", "VisibilityTimeout": "40"}

    status, root, text = query(server, {
        "Action": "SendMessageBatch", "QueueUrl": url,
        "SendMessageBatchRequestEntry.1.Id": "one", "SendMessageBatchRequestEntry.1.MessageBody": "1",
        "SendMessageBatchRequestEntry.2.Id": "two", "SendMessageBatchRequestEntry.2.MessageBody": "",
    })
    assert status == 200, text
    assert [e.find("Id").text for e in root.findall(
        "SendMessageBatchResult/SendMessageBatchResultEntry")] == ["one"]
    failed = root.findall("SendMessageBatchResult/BatchResultErrorEntry")
    assert [(f.find("Id").text, f.find("SenderFault").text) for f in failed] == [("two", "true")]
    assert failed[0].find("Code").text == "MissingParameter"
    status, root, _ = query(server, {"Action": "ReceiveMessage", "QueueUrl": url})
    handle = root.find("ReceiveMessageResult/Message/ReceiptHandle").text
    status, root, text = query(server, {
        "Action": "ChangeMessageVisibilityBatch", "QueueUrl": url,
        "ChangeMessageVisibilityBatchRequestEntry.1.Id": "c1",
        "ChangeMessageVisibilityBatchRequestEntry.1.ReceiptHandle": handle,
        "ChangeMessageVisibilityBatchRequestEntry.1.VisibilityTimeout": "60"})
    assert [e.find("Id").text for e in root.findall(
        "ChangeMessageVisibilityBatchResult/ChangeMessageVisibilityBatchResultEntry")] == ["c1"], text
    status, root, text = query(server, {
        "Action": "DeleteMessageBatch", "QueueUrl": url,
        "DeleteMessageBatchRequestEntry.1.Id": "d1",
        "DeleteMessageBatchRequestEntry.1.ReceiptHandle": handle,
        "DeleteMessageBatchRequestEntry.2.Id": "d2",
        "DeleteMessageBatchRequestEntry.2.ReceiptHandle": "garbage"})
    assert [e.find("Id").text for e in root.findall(
        "DeleteMessageBatchResult/DeleteMessageBatchResultEntry")] == ["d1"], text
    assert [e.find("Code").text for e in root.findall(
        "DeleteMessageBatchResult/BatchResultErrorEntry")] == ["ReceiptHandleIsInvalid"]

    # The query protocol's error shape.
    status, root, text = query(server, {"Action": "GetQueueUrl", "QueueName": "nope-" + name})
    assert status == 400
    assert root.tag == "ErrorResponse"
    assert root.find("Error/Type").text == "Sender"
    assert root.find("Error/Code").text == "AWS.SimpleQueueService.NonExistentQueue"
    assert root.find("Error/Message").text == "The specified queue does not exist."
    assert root.find("RequestId").text
    status, root, _ = query(server, {"Action": "DeleteQueue", "QueueUrl": url})
    assert status == 200


def test_json_error_shape_for_a_missing_queue(server):
    status, headers, text = json_request(
        server, "GetQueueUrl", json.dumps({"QueueName": "nope-" + uuid.uuid4().hex}).encode())
    assert status == 400
    assert headers.get("x-amzn-query-error") == "AWS.SimpleQueueService.NonExistentQueue;Sender"
    assert json.loads(text) == {"__type": "com.amazonaws.sqs#QueueDoesNotExist",
                                "message": "The specified queue does not exist."}


# ------------------------------------------------------------------------ auth and the CLI


def test_sqs_actions_are_authorised_per_queue(server, sqs):
    mine = sqs.create_queue(QueueName=qname("mine"))["QueueUrl"]
    other = sqs.create_queue(QueueName=qname("other"))["QueueUrl"]
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{mine.rsplit('/', 1)[1]}"
    key = server.create_key("sqs-scoped-" + uuid.uuid4().hex[:6], {
        "Statement": [{"Effect": "Allow", "Action": ["sqs:SendMessage", "sqs:GetQueueUrl"],
                       "Resource": arn}]})
    scoped = sqs_client(server.base_url, *key)
    scoped.send_message(QueueUrl=mine, MessageBody="allowed")
    for call in (lambda: scoped.receive_message(QueueUrl=mine),
                 lambda: scoped.send_message(QueueUrl=other, MessageBody="no"),
                 lambda: scoped.list_queues()):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code_of(e) == "AccessDenied", e.value.response
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    status, root, _ = query(server, {"Action": "ReceiveMessage", "QueueUrl": mine}, key=key)
    assert status == 403 and root.find("Error/Code").text == "AccessDenied"
    # Unsigned: refused.
    req = urllib.request.Request(server.base_url + "/", data=b"{}", method="POST", headers={
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.ListQueues"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 403


def test_aws_cli(server):
    key_id, secret = server.admin_key()
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret)

    def run(*args):
        out = subprocess.run([aws_cli(), "sqs", *args, "--endpoint-url", server.base_url,
                              "--output", "json"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr + out.stdout
        return json.loads(out.stdout) if out.stdout.strip() else {}

    name = qname("cli")
    url = run("create-queue", "--queue-name", name)["QueueUrl"]
    assert url.endswith(f"/{ACCOUNT}/{name}")
    sent = run("send-message", "--queue-url", url, "--message-body", "from the cli",
               "--message-attributes", '{"k":{"DataType":"String","StringValue":"v"}}')
    assert sent["MD5OfMessageBody"] == hashlib.md5(b"from the cli").hexdigest()
    got = run("receive-message", "--queue-url", url, "--message-attribute-names", "All",
              "--wait-time-seconds", "1")["Messages"]
    assert got[0]["Body"] == "from the cli"
    assert got[0]["MessageAttributes"] == {"k": {"DataType": "String", "StringValue": "v"}}
    run("delete-message", "--queue-url", url, "--receipt-handle", got[0]["ReceiptHandle"])
    attrs = run("get-queue-attributes", "--queue-url", url, "--attribute-names", "All")["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert any(u == url for u in run("list-queues", "--queue-name-prefix", name)["QueueUrls"])
    run("delete-queue", "--queue-url", url)


MAPPED_HANDLER = """import base64, hashlib

TRACE = %r


def handler(event, context):
    for r in event["Records"]:
        a = r["messageAttributes"]
        assert a["k"] == {"stringValue": "v", "stringListValues": [], "binaryListValues": [],
                          "dataType": "String"}, a
        assert a["b"]["dataType"] == "Binary", a
        assert base64.b64decode(a["b"]["binaryValue"]) == bytes([1, 2]), a
        assert r["md5OfBody"] == hashlib.md5(r["body"].encode()).hexdigest(), r
        assert r["attributes"]["AWSTraceHeader"] == TRACE, r
        assert r["eventSourceARN"].startswith("arn:aws:sqs:us-east-1:000000000000:sqsmap-"), r
    return {}
"""


def test_messages_sent_through_sqs_reach_a_mapped_function_with_their_attributes(server, sqs):
    """A message sent with the SQS API is delivered by an event-source mapping in Lambda's
    SQS event shape. The function raises on any difference; what it fails on lands in the
    dead-letter queue (maxReceiveCount 1), so an empty dead-letter queue is the proof."""
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    dlq = sqs.create_queue(QueueName=qname("sqsmap-dlq"))["QueueUrl"]
    src_name = qname("sqsmap")
    src = sqs.create_queue(QueueName=src_name, Attributes={
        "VisibilityTimeout": "1",
        "RedrivePolicy": json.dumps({
            "deadLetterTargetArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{dlq.rsplit('/', 1)[1]}",
            "maxReceiveCount": 1})})["QueueUrl"]
    attrs = {"k": {"DataType": "String", "StringValue": "v"},
             "b": {"DataType": "Binary", "BinaryValue": b"\x01\x02"}}
    sqs.send_message_batch(QueueUrl=src, Entries=[
        {"Id": f"m{i}", "MessageBody": f"message {i}", "MessageAttributes": attrs,
         "MessageSystemAttributes": {"AWSTraceHeader": {"DataType": "String", "StringValue": trace}}}
        for i in range(3)])
    lam = make_client(server.base_url, access_key=server.admin_key()[0],
                      secret_key=server.admin_key()[1])
    fn = qname("sqsmap-fn")
    lam.create_function(FunctionName=fn, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": python_zip(source=MAPPED_HANDLER % trace)})
    try:
        m = lam.create_event_source_mapping(
            FunctionName=fn, EventSourceArn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:{src_name}")
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        deadline = time.time() + 90
        while time.time() < deadline:
            left = sqs.get_queue_attributes(QueueUrl=src, AttributeNames=names)["Attributes"]
            if left == {n: "0" for n in names}:
                break
            time.sleep(0.3)
        assert left == {n: "0" for n in names}, left
        dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)
        assert "Messages" not in dead, server.log()[-4000:]
        lam.delete_event_source_mapping(UUID=m["UUID"])
    finally:
        lam.delete_function(FunctionName=fn)


def test_acknowledged_sends_survive_kill_9(tmp_path):
    """`--auth off`: any signature is accepted; messages acknowledged before SIGKILL, with
    their attributes and the queue's SQS attributes and tags, are all there after a restart."""
    srv = NimbusServer(nimbus_bin(), tmp_path, auth=False)
    srv.start()
    try:
        sqs = sqs_client(srv.base_url, "anything", "anything")
        url = sqs.create_queue(QueueName="durable", Attributes={
            "DelaySeconds": "0", "ReceiveMessageWaitTimeSeconds": "2"},
            tags={"keep": "me"})["QueueUrl"]
        attrs = {"n": {"DataType": "Number", "StringValue": "7"}}
        bodies = {f"m{i}" for i in range(30)}
        for b in sorted(bodies):
            sqs.send_message(QueueUrl=url, MessageBody=b, MessageAttributes=attrs)
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        srv.start()
        sqs = sqs_client(srv.base_url, "anything", "anything")
        got = set()
        while True:
            r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                    MessageAttributeNames=["All"])
            if "Messages" not in r:
                break
            for m in r["Messages"]:
                assert m["MessageAttributes"] == attrs
                got.add(m["Body"])
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        assert got == bodies
        assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"keep": "me"}
        assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ReceiveMessageWaitTimeSeconds"])["Attributes"] == {"ReceiveMessageWaitTimeSeconds": "2"}
    finally:
        srv.stop()
