"""InvokeWithResponseStream through unmodified boto3: the `application/vnd.amazon.eventstream`
answer is read by botocore's own event stream parser (PayloadChunk events as the function
writes, then InvokeComplete with ErrorCode/ErrorDetails/LogResult)."""

import base64
import time

import pytest
from botocore.exceptions import ClientError

from conftest import error_code, http_status, unique_name, zip_bytes

# Nimbus's own extension: a Python generator handler streams what it yields.
PY_STREAMER = '''import time

def handler(event, context):
    print("streamer-log-line")
    yield "first;"
    time.sleep(event.get("sleep", 0))
    if event.get("fail"):
        raise ValueError("broke mid-stream")
    yield b"second;"
    yield {"third": 3}
'''

NODE_STREAMER = '''exports.handler = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.setContentType('text/plain');
  responseStream.write('node-first;');
  await new Promise((r) => setTimeout(r, event.sleep || 0));
  if (event.fail) throw new Error('node broke mid-stream');
  responseStream.write('node-last');
  responseStream.end();
});
'''

BUFFERED = '''def handler(event, context):
    return {"buffered": True, "event": event}
'''


def read_stream(resp):
    """The chunks with their arrival times, and the InvokeComplete event."""
    chunks, complete = [], None
    for event in resp["EventStream"]:
        if "PayloadChunk" in event:
            chunks.append((time.monotonic(), event["PayloadChunk"]["Payload"]))
        elif "InvokeComplete" in event:
            assert complete is None, "two InvokeComplete events"
            complete = event["InvokeComplete"]
        else:
            raise AssertionError(f"unexpected event {event}")
    assert complete is not None, "no InvokeComplete event"
    return chunks, complete


def body(chunks):
    return b"".join(c for _, c in chunks)


@pytest.fixture
def py_streamer(make_function):
    name = unique_name("stream-py")
    make_function(name=name, zip_data=zip_bytes({"app.py": PY_STREAMER}))
    return name


def test_python_generator_streams_payload_chunks(lambda_client, py_streamer):
    resp = lambda_client.invoke_with_response_stream(
        FunctionName=py_streamer, Payload=b'{"sleep": 1}')
    assert resp["StatusCode"] == 200
    assert resp["ExecutedVersion"] == "$LATEST"
    assert resp["ResponseMetadata"]["HTTPHeaders"]["content-type"] == \
        "application/vnd.amazon.eventstream"
    chunks, complete = read_stream(resp)
    assert body(chunks) == b'first;second;{"third": 3}'
    assert "ErrorCode" not in complete, complete
    assert "LogResult" not in complete, complete
    # The first chunk was read while the function still slept.
    first_at = chunks[0][0]
    last_at = chunks[-1][0]
    assert last_at - first_at >= 0.5, chunks


def test_plain_invoke_of_a_streaming_function_gets_the_whole_body(lambda_client, py_streamer):
    resp = lambda_client.invoke(FunctionName=py_streamer, Payload=b"{}")
    assert resp["StatusCode"] == 200
    assert "FunctionError" not in resp, resp
    assert resp["Payload"].read() == b'first;second;{"third": 3}'


def test_error_mid_stream_ends_in_invoke_complete_with_error_code(lambda_client, py_streamer):
    resp = lambda_client.invoke_with_response_stream(
        FunctionName=py_streamer, Payload=b'{"fail": true}', LogType="Tail")
    assert resp["StatusCode"] == 200
    chunks, complete = read_stream(resp)
    assert body(chunks) == b"first;"
    assert complete["ErrorCode"] == "ValueError", complete
    assert "broke mid-stream" in complete["ErrorDetails"], complete
    log = base64.b64decode(complete["LogResult"]).decode()
    assert "streamer-log-line" in log, log
    assert "REPORT RequestId:" in log, log


def test_node_streamify_response(lambda_client, make_function):
    name = unique_name("stream-node")
    make_function(name=name, zip_data=zip_bytes({"index.js": NODE_STREAMER}),
                  runtime="nodejs20.x", handler="index.handler")
    chunks, complete = read_stream(
        lambda_client.invoke_with_response_stream(FunctionName=name, Payload=b'{"sleep": 700}'))
    assert body(chunks) == b"node-first;node-last"
    assert complete.get("ErrorCode") is None, complete
    assert chunks[-1][0] - chunks[0][0] >= 0.5, chunks

    chunks, complete = read_stream(
        lambda_client.invoke_with_response_stream(FunctionName=name, Payload=b'{"fail": true}'))
    assert body(chunks) == b"node-first;"
    assert complete["ErrorCode"] == "Error", complete
    assert "node broke mid-stream" in complete["ErrorDetails"], complete


def test_buffered_function_arrives_as_one_chunk(lambda_client, make_function):
    name = unique_name("stream-buf")
    make_function(name=name, zip_data=zip_bytes({"app.py": BUFFERED}))
    chunks, complete = read_stream(
        lambda_client.invoke_with_response_stream(FunctionName=name, Payload=b'{"k": 1}'))
    assert body(chunks) == b'{"buffered": true, "event": {"k": 1}}'
    assert complete.get("ErrorCode") is None, complete


def test_function_error_before_any_chunk(lambda_client, make_function):
    name = unique_name("stream-err")
    src = "def handler(event, context):\n    raise KeyError('nope')\n"
    make_function(name=name, zip_data=zip_bytes({"app.py": src}))
    resp = lambda_client.invoke_with_response_stream(FunctionName=name, Payload=b"{}")
    assert resp["StatusCode"] == 200
    chunks, complete = read_stream(resp)
    assert chunks == []
    assert complete["ErrorCode"] == "KeyError", complete


def test_dry_run_qualifier_and_refusals(lambda_client, py_streamer):
    resp = lambda_client.invoke_with_response_stream(
        FunctionName=py_streamer, InvocationType="DryRun", Qualifier="$LATEST")
    assert resp["StatusCode"] == 204
    assert resp["ExecutedVersion"] == "$LATEST"

    with pytest.raises(ClientError) as e:
        lambda_client.invoke_with_response_stream(FunctionName=unique_name("missing"))
    assert error_code(e.value) == "ResourceNotFoundException"
    assert http_status(e.value) == 404

    with pytest.raises(ClientError) as e:
        lambda_client.invoke_with_response_stream(FunctionName=py_streamer, Qualifier="7")
    assert error_code(e.value) == "ResourceNotFoundException"

    with pytest.raises(ClientError) as e:
        lambda_client.invoke_with_response_stream(FunctionName=py_streamer, Payload=b"not json")
    assert error_code(e.value) == "InvalidRequestContentException"
    assert http_status(e.value) == 400


BIG_STREAMER = '''def handler(event, context):
    if event.get("small"):
        yield "still serving"
        return
    block = b"x" * (1024 * 1024)
    for _ in range(24):
        yield block
'''


def test_stream_past_20_mib_is_cut(lambda_client, make_function):
    name = unique_name("stream-big")
    make_function(name=name, zip_data=zip_bytes({"app.py": BIG_STREAMER}), Timeout=30)
    chunks, complete = read_stream(
        lambda_client.invoke_with_response_stream(FunctionName=name, Payload=b"{}"))
    assert len(body(chunks)) == 20 * 1024 * 1024
    assert complete["ErrorCode"] == "Function.ResponseSizeTooLarge", complete
    # The function keeps serving afterwards.
    chunks, complete = read_stream(
        lambda_client.invoke_with_response_stream(FunctionName=name, Payload=b'{"small": true}'))
    assert body(chunks) == b"still serving"
    assert "ErrorCode" not in complete, complete


def test_timeout_mid_stream_ends_in_sandbox_timedout(lambda_client, make_function):
    name = unique_name("stream-slow")
    make_function(name=name, zip_data=zip_bytes({"app.py": PY_STREAMER}), Timeout=1)
    started = time.monotonic()
    chunks, complete = read_stream(
        lambda_client.invoke_with_response_stream(FunctionName=name, Payload=b'{"sleep": 30}'))
    assert time.monotonic() - started < 15
    assert body(chunks) == b"first;"
    assert complete["ErrorCode"] == "Sandbox.Timedout", complete
