"""S3 bucket notifications through unmodified boto3: PutBucketNotificationConfiguration with a
function, a queue and EventBridge as targets; records in S3's event format (version 2.1)
reaching a function as async events, a built-in queue as message bodies, and the bus as
EventBridge's "Object Created" / "Object Deleted" events. One server with `--auth off` and
an S3 listener for the module. Run through tests/e2e/s3.rs, or by hand:
`cargo build -p nimbus-cli && python3 -m pytest tests/python/test_s3_notifications.py -q`.
"""

import hashlib
import json
import time
import urllib.parse
import urllib.request
import uuid

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from conftest import (ACCESS_KEY, ACCOUNT, REGION, ROLE, SECRET_KEY, make_client, native,
                      python_zip, queue_arn)
from test_s3 import S3Nimbus

@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = S3Nimbus(tmp_path_factory.mktemp("nimbus-s3-notify"), auth=False)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def s3(srv):
    session = boto3.session.Session(aws_access_key_id=ACCESS_KEY,
                                    aws_secret_access_key=SECRET_KEY, region_name=REGION)
    return session.client("s3", endpoint_url=srv.s3_url, config=Config(
        signature_version="s3v4", s3={"addressing_style": "path"},
        retries={"total_max_attempts": 3, "mode": "standard"}))


@pytest.fixture(scope="module")
def lam(srv):
    return make_client(srv.base_url)


@pytest.fixture(scope="module")
def events(srv):
    session = boto3.session.Session(aws_access_key_id=ACCESS_KEY,
                                    aws_secret_access_key=SECRET_KEY, region_name=REGION)
    return session.client("events", endpoint_url=srv.base_url)


def new_bucket(s3):
    name = "n-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    return name


def new_function(lam):
    name = "s3sink-" + uuid.uuid4().hex[:8]
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE,
                        Handler="app.handler", Code={"ZipFile": python_zip()})
    return name


def new_queue(srv):
    name = "s3q-" + uuid.uuid4().hex[:8]
    native(srv, "PUT", f"/v1/queues/{name}", {"visibility_timeout": 30})
    return name


def function_arn(name):
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def delivered_events(srv, fn, count, timeout=30):
    """The payloads of `fn`'s async events once `count` have succeeded, oldest first."""
    deadline = time.time() + timeout
    done = []
    while time.time() < deadline:
        evs = native(srv, "GET", f"/v1/functions/{fn}/events")["events"]
        done = [e for e in evs if e["status"] == "succeeded"]
        if len(done) >= count:
            break
        time.sleep(0.2)
    assert len(done) >= count, f"{len(done)} of {count} events delivered to {fn}: {evs}\n{srv.log()[-3000:]}"
    payloads = [json.loads(e["result"])["event"] for e in done]
    return sorted(payloads, key=lambda p: json.dumps(p))


def received_bodies(srv, queue, count, timeout=30):
    deadline = time.time() + timeout
    bodies = []
    while time.time() < deadline and len(bodies) < count:
        got = native(srv, "POST", f"/v1/queues/{queue}/receive",
                     {"max": 10, "wait_seconds": 1})
        for m in got["messages"]:
            bodies.append(json.loads(m["body"]))
            native(srv, "DELETE", f"/v1/queues/{queue}/messages/"
                   + urllib.parse.quote(m["receipt"], safe=""))
    assert len(bodies) >= count, f"{len(bodies)} of {count} messages on {queue}: {bodies}"
    return bodies


def records_of(payloads):
    """The S3 records among payloads (test events set aside)."""
    return [r for p in payloads for r in p.get("Records", [])]


def test_configuration_round_trips_and_bad_ones_are_refused(srv, s3, lam):
    b = new_bucket(s3)
    fn = new_function(lam)
    assert s3.get_bucket_notification_configuration(Bucket=b).get(
        "LambdaFunctionConfigurations", []) == []
    cfg = {"LambdaFunctionConfigurations": [{
        "Id": "thumbs", "LambdaFunctionArn": function_arn(fn),
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "in/"},
                                           {"Name": "suffix", "Value": ".jpg"}]}}}]}
    s3.put_bucket_notification_configuration(Bucket=b, NotificationConfiguration=cfg)
    got = s3.get_bucket_notification_configuration(Bucket=b)
    lc = got["LambdaFunctionConfigurations"]
    assert len(lc) == 1
    assert lc[0]["Id"] == "thumbs"
    assert lc[0]["LambdaFunctionArn"] == function_arn(fn)
    assert lc[0]["Events"] == ["s3:ObjectCreated:*"]
    rules = {r["Name"].lower(): r["Value"] for r in lc[0]["Filter"]["Key"]["FilterRules"]}
    assert rules == {"prefix": "in/", "suffix": ".jpg"}

    for bad in (
        {"LambdaFunctionConfigurations": [{"LambdaFunctionArn": function_arn(fn),
                                           "Events": ["s3:ObjectExploded:*"]}]},
        {"LambdaFunctionConfigurations": [{"LambdaFunctionArn": "not-an-arn",
                                           "Events": ["s3:ObjectCreated:*"]}]},
        {"TopicConfigurations": [{"TopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:t",
                                  "Events": ["s3:ObjectCreated:*"]}]},
        # Destinations are checked, as S3 does: no such function, alias or queue.
        {"LambdaFunctionConfigurations": [{"LambdaFunctionArn": function_arn("no-such-fn"),
                                           "Events": ["s3:ObjectCreated:*"]}]},
        {"LambdaFunctionConfigurations": [{"LambdaFunctionArn": function_arn(fn) + ":nolias",
                                           "Events": ["s3:ObjectCreated:*"]}]},
        {"QueueConfigurations": [{"QueueArn": queue_arn("no-such-queue"),
                                  "Events": ["s3:ObjectCreated:*"]}]},
    ):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.put_bucket_notification_configuration(Bucket=b, NotificationConfiguration=bad)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400, bad
    # A refused configuration leaves the stored one as it was.
    assert s3.get_bucket_notification_configuration(Bucket=b)[
        "LambdaFunctionConfigurations"][0]["Id"] == "thumbs"


def test_object_created_and_removed_reach_a_function_in_s3s_format(srv, s3, lam):
    b = new_bucket(s3)
    fn = new_function(lam)
    s3.put_bucket_notification_configuration(Bucket=b, NotificationConfiguration={
        "LambdaFunctionConfigurations": [{
            "Id": "created", "LambdaFunctionArn": function_arn(fn),
            "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:Delete"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "in/"},
                                               {"Name": "suffix", "Value": ".jpg"}]}}}]})
    body = b"hello"
    s3.put_object(Bucket=b, Key="in/a b.jpg", Body=body)
    s3.put_object(Bucket=b, Key="other/x.jpg", Body=b"no")   # prefix does not match
    s3.put_object(Bucket=b, Key="in/y.png", Body=b"no")      # suffix does not match
    s3.copy_object(Bucket=b, Key="in/copy.jpg", CopySource={"Bucket": b, "Key": "in/a b.jpg"})
    s3.delete_object(Bucket=b, Key="in/a b.jpg")

    payloads = delivered_events(srv, fn, 3)
    # S3 sends its test message to queues (and topics), not to functions.
    assert not [p for p in payloads if p.get("Event") == "s3:TestEvent"], payloads
    records = records_of(payloads)
    by_name = {}
    for r in records:
        by_name.setdefault((r["eventName"], r["s3"]["object"]["key"]), r)
    assert set(by_name) == {("ObjectCreated:Put", "in/a+b.jpg"),
                            ("ObjectCreated:Copy", "in/copy.jpg"),
                            ("ObjectRemoved:Delete", "in/a+b.jpg")}, records

    put = by_name[("ObjectCreated:Put", "in/a+b.jpg")]
    assert put["eventVersion"] == "2.1"
    assert put["eventSource"] == "aws:s3"
    assert put["awsRegion"] == REGION
    assert put["eventTime"].endswith("Z") and "T" in put["eventTime"]
    assert put["s3"]["s3SchemaVersion"] == "1.0"
    assert put["s3"]["configurationId"] == "created"
    assert put["s3"]["bucket"]["name"] == b
    assert put["s3"]["bucket"]["arn"] == f"arn:aws:s3:::{b}"
    assert put["s3"]["object"]["size"] == len(body)
    assert put["s3"]["object"]["eTag"] == hashlib.md5(body).hexdigest()
    assert put["s3"]["object"]["sequencer"]
    assert "principalId" in put["userIdentity"]
    assert "sourceIPAddress" in put["requestParameters"]
    assert "x-amz-request-id" in put["responseElements"]

    removed = by_name[("ObjectRemoved:Delete", "in/a+b.jpg")]
    assert "size" not in removed["s3"]["object"] and "eTag" not in removed["s3"]["object"]
    # The sequencer orders events of one key.
    assert removed["s3"]["object"]["sequencer"] > put["s3"]["object"]["sequencer"]
    copied = by_name[("ObjectCreated:Copy", "in/copy.jpg")]
    assert copied["s3"]["object"]["eTag"] == put["s3"]["object"]["eTag"]
    # Nothing for the keys the filter left out (they were written before the copy and
    # the delete, whose records have arrived).
    time.sleep(0.5)
    assert len(records_of(delivered_events(srv, fn, 3))) == 3
    with urllib.request.urlopen(srv.base_url + "/metrics", timeout=30) as r:
        metrics = r.read().decode()
    line = f'nimbus_s3_notifications_total{{bucket="{b}",outcome="delivered"}} 3'
    assert line in metrics, [x for x in metrics.splitlines() if "s3_notif" in x]


def test_multipart_completion_reaches_a_queue_as_the_message_body(srv, s3):
    b = new_bucket(s3)
    q = new_queue(srv)
    s3.put_bucket_notification_configuration(Bucket=b, NotificationConfiguration={
        "QueueConfigurations": [{"Id": "q", "QueueArn": queue_arn(q),
                                 "Events": ["s3:ObjectCreated:CompleteMultipartUpload"]}]})
    up = s3.create_multipart_upload(Bucket=b, Key="big.bin")
    part1 = b"a" * (5 * 1024 * 1024)
    part2 = b"b" * 10
    e1 = s3.upload_part(Bucket=b, Key="big.bin", UploadId=up["UploadId"], PartNumber=1,
                        Body=part1)["ETag"]
    e2 = s3.upload_part(Bucket=b, Key="big.bin", UploadId=up["UploadId"], PartNumber=2,
                        Body=part2)["ETag"]
    done = s3.complete_multipart_upload(
        Bucket=b, Key="big.bin", UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    s3.put_object(Bucket=b, Key="small.bin", Body=b"x")  # a Put: not configured

    bodies = received_bodies(srv, q, 2)
    tests = [x for x in bodies if x.get("Event") == "s3:TestEvent"]
    assert len(tests) == 1, bodies
    assert tests[0]["Service"] == "Amazon S3" and tests[0]["Bucket"] == b
    records = records_of(bodies)
    assert len(records) == 1, bodies
    r = records[0]
    assert r["eventName"] == "ObjectCreated:CompleteMultipartUpload"
    assert r["s3"]["object"]["key"] == "big.bin"
    assert r["s3"]["object"]["size"] == len(part1) + len(part2)
    assert r["s3"]["object"]["eTag"] == done["ETag"].strip('"')
    assert r["s3"]["object"]["eTag"].endswith("-2")


def test_eventbridge_gets_object_created_and_deleted(srv, s3, events):
    b = new_bucket(s3)
    q = new_queue(srv)
    rule = "s3-" + uuid.uuid4().hex[:8]
    events.put_rule(Name=rule, EventPattern=json.dumps(
        {"source": ["aws.s3"], "detail": {"bucket": {"name": [b]}}}))
    events.put_targets(Rule=rule, Targets=[{"Id": "q", "Arn": queue_arn(q)}])
    s3.put_bucket_notification_configuration(
        Bucket=b, NotificationConfiguration={"EventBridgeConfiguration": {}})
    assert "EventBridgeConfiguration" in s3.get_bucket_notification_configuration(Bucket=b)
    s3.put_object(Bucket=b, Key="photos/cat 1.jpg", Body=b"meow")
    s3.delete_object(Bucket=b, Key="photos/cat 1.jpg")

    got = received_bodies(srv, q, 2)
    assert not [x for x in got if x.get("Event") == "s3:TestEvent"], "EventBridge gets no test event"
    by_type = {e["detail-type"]: e for e in got}
    assert set(by_type) == {"Object Created", "Object Deleted"}, got
    created = by_type["Object Created"]
    assert created["source"] == "aws.s3"
    assert created["account"] == ACCOUNT and created["region"] == REGION
    assert created["resources"] == [f"arn:aws:s3:::{b}"]
    d = created["detail"]
    assert d["version"] == "0"
    assert d["bucket"]["name"] == b
    assert d["object"]["key"] == "photos/cat 1.jpg"  # not URL-encoded in EventBridge events
    assert d["object"]["size"] == 4
    assert d["object"]["etag"] == hashlib.md5(b"meow").hexdigest()
    assert d["object"]["sequencer"]
    assert d["reason"] == "PutObject"
    deleted = by_type["Object Deleted"]["detail"]
    assert deleted["reason"] == "DeleteObject"
    assert deleted["object"]["key"] == "photos/cat 1.jpg"


def test_no_notification_is_lost_to_kill_9(tmp_path):
    """500 PUTs acknowledged with a queue notification configured, SIGKILL right after the
    last acknowledgement: after the restart every acknowledged object's notification
    arrives (at least once), and none for an object that does not exist."""
    import concurrent.futures
    import http.client
    import signal

    s = S3Nimbus(tmp_path, auth=False)
    s.start()
    try:
        q = new_queue(s)
        conn = http.client.HTTPConnection("127.0.0.1", s.s3_port, timeout=30)
        conn.request("PUT", "/crash")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        cfg = (f"<NotificationConfiguration><QueueConfiguration><Id>q</Id>"
               f"<Queue>{queue_arn(q)}</Queue><Event>s3:ObjectCreated:*</Event>"
               f"</QueueConfiguration></NotificationConfiguration>")
        conn.request("PUT", "/crash?notification", body=cfg.encode())
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        resp.read()

        def put_many(worker):
            c = http.client.HTTPConnection("127.0.0.1", s.s3_port, timeout=30)
            acked = []
            for i in range(worker, 500, 8):
                key = f"obj/{i:03d}"
                c.request("PUT", f"/crash/{key}", body=f"body {i}".encode())
                r = c.getresponse()
                r.read()
                assert r.status == 200, (key, r.status)
                acked.append(key)
            return acked

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            acked = {k for ks in pool.map(put_many, range(8)) for k in ks}
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait()
        assert len(acked) == 500

        s.start()
        keys = set()
        deadline = time.time() + 60
        while time.time() < deadline and not acked <= keys:
            got = native(s, "POST", f"/v1/queues/{q}/receive", {"max": 10, "wait_seconds": 1})
            for m in got["messages"]:
                for r in json.loads(m["body"]).get("Records", []):
                    keys.add(urllib.parse.unquote_plus(r["s3"]["object"]["key"]))
                native(s, "DELETE", f"/v1/queues/{q}/messages/"
                       + urllib.parse.quote(m["receipt"], safe=""))
        assert acked <= keys, f"{len(acked - keys)} acknowledged PUTs lost their notification"
        assert keys <= acked, f"notifications for objects never written: {keys - acked}"
    finally:
        s.stop()


def test_a_fifo_queue_is_refused_as_a_destination(srv, s3):
    """S3 does not send event notifications to FIFO queues: a configuration naming one is
    refused with InvalidArgument (even though the queue exists), and nothing is stored."""
    b = new_bucket(s3)
    session = boto3.session.Session(aws_access_key_id=ACCESS_KEY,
                                    aws_secret_access_key=SECRET_KEY, region_name=REGION)
    sqs = session.client("sqs", endpoint_url=srv.base_url)
    q = "s3fifo-" + uuid.uuid4().hex[:8] + ".fifo"
    sqs.create_queue(QueueName=q, Attributes={"FifoQueue": "true"})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_bucket_notification_configuration(Bucket=b, NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue_arn(q), "Events": ["s3:ObjectCreated:*"]}]})
    err = e.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400, err
    assert err["Error"]["Code"] == "InvalidArgument", err
    assert "FIFO" in err["Error"]["Message"], err
    assert s3.get_bucket_notification_configuration(Bucket=b).get("QueueConfigurations", []) == []
