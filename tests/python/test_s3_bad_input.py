"""Bad input to the S3 listener: each request gets S3's error (or, for a body that never
arrives whole, no object), and nothing else changes — the objects and configurations already
there stay as they were, no partial bytes are left in the blob store's `tmp/`, and the server
goes on serving. Raw requests are signed with botocore's own SigV4 signer and written to a
socket, so a body can be cut short or declared larger than it is.

Run through tests/e2e/bad_input.rs, or by hand:
`cargo build -p nimbus-cli && python3 -m pytest tests/python/test_s3_bad_input.py -q`.
"""

import base64
import hashlib
import socket
import uuid

import botocore.exceptions
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import REGION
# test_s3's module fixtures: this module gets its own server (auth on, S3 listener) and
# admin client.
from test_s3 import code, s3, server, status  # noqa: F401


@pytest.fixture
def bucket(s3):
    name = "bad-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="keep.txt", Body=b"kept bytes")
    return name


class UnsignedPayload(S3SigV4Auth):
    """SigV4 with `x-amz-content-sha256: UNSIGNED-PAYLOAD`, as SDKs sign streamed uploads:
    the signature does not depend on the body, so the body can be anything."""

    def _should_sha256_sign_payload(self, request):
        return False


def signed(server, method, path, body=b"", headers=None, unsigned=False):
    """The headers of a signed request (Host included) for `path` (with its query)."""
    req = AWSRequest(method=method, url=server.s3_url + path, data=body, headers=headers or {})
    signer = UnsignedPayload if unsigned else S3SigV4Auth
    signer(Credentials(*server.admin_key()), "s3", REGION).add_auth(req)
    out = dict(req.headers.items())
    out["Host"] = f"127.0.0.1:{server.s3_port}"
    return out


def raw(server, method, path, headers, body, declared=None, timeout=30, cut=None):
    """Writes one request with `Content-Length: declared` (default: the body's length) and
    reads the answer; returns (status or None when the server closed without one, text).
    A body shorter than declared is ended by half-closing the connection (unless `cut` is
    False); a whole one is not: the server may drop a half-closed connection before it
    answers."""
    head = [f"{method} {path} HTTP/1.1"]
    head += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "content-length"]
    head.append(f"Content-Length: {len(body) if declared is None else declared}")
    head.append("Connection: close")
    with socket.create_connection(("127.0.0.1", server.s3_port), timeout=timeout) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        if cut if cut is not None else (declared is not None and declared > len(body)):
            s.shutdown(socket.SHUT_WR)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    if not data:
        return None, ""
    text = data.decode("utf-8", "replace")
    return int(text.split(" ", 2)[1]), text


def leftovers(server):
    """Files in the blob store's temporary directory."""
    tmp = server.workdir / "data" / "objects" / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def unchanged(s3, bucket):
    """The bucket holds exactly what the fixture put there."""
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["keep.txt"], keys
    assert s3.get_object(Bucket=bucket, Key="keep.txt")["Body"].read() == b"kept bytes"


@pytest.mark.parametrize("query,body", [
    ("?delete", b"<Delete><Object><Key>keep.txt</Key>"),
    ("?notification", b"<NotificationConfiguration><QueueConfiguration>"),
    ("?cors", b"not xml at all"),
    ("?lifecycle", b"<LifecycleConfiguration><Rule><Filter>"),
    ("?tagging", b"<Tagging><TagSet><Tag><Key>a</Key></Tag>"),
])
def test_malformed_xml_is_refused_and_changes_nothing(server, s3, bucket, query, body):
    method = "POST" if query == "?delete" else "PUT"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    headers = signed(server, method, f"/{bucket}{query}", body, {"Content-MD5": md5})
    got, text = raw(server, method, f"/{bucket}{query}", headers, body)
    assert got == 400, text
    assert "<Code>MalformedXML</Code>" in text, text
    unchanged(s3, bucket)
    if query == "?cors":
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.get_bucket_cors(Bucket=bucket)
        assert code(e) == "NoSuchCORSConfiguration"


def test_a_wrong_content_md5_is_bad_digest_and_stores_nothing(server, s3, bucket):
    wrong = base64.b64encode(hashlib.md5(b"other bytes").digest()).decode()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="keep.txt", Body=b"new bytes", ContentMD5=wrong)
    assert code(e) == "BadDigest" and status(e) == 400
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="new.txt", Body=b"new bytes", ContentMD5="not base64!")
    assert code(e) == "InvalidDigest" and status(e) == 400
    unchanged(s3, bucket)
    assert leftovers(server) == []


def test_a_truncated_upload_stores_nothing(server, s3, bucket):
    body = b"x" * 100_000
    for key in ("keep.txt", "cut.bin"):
        headers = signed(server, "PUT", f"/{bucket}/{key}", unsigned=True)
        got, text = raw(server, "PUT", f"/{bucket}/{key}", headers, body[:40_000],
                        declared=len(body))
        # The connection ends before the body does: an error or no answer, never a 200.
        assert got != 200, text
        if got is not None:
            assert got == 400 and "<Code>IncompleteBody</Code>" in text, text
    unchanged(s3, bucket)
    assert leftovers(server) == []


def test_five_gib_declared_with_a_short_body_stores_nothing(server, s3, bucket):
    headers = signed(server, "PUT", f"/{bucket}/huge.bin", unsigned=True)
    got, text = raw(server, "PUT", f"/{bucket}/huge.bin", headers, b"only a few bytes",
                    declared=5 * 1024 ** 3)
    assert got != 200, text
    if got is not None:
        assert got == 400 and "<Code>IncompleteBody</Code>" in text, text
    # One byte over S3's 5 GiB limit for a single PUT is refused before any byte is read.
    got, text = raw(server, "PUT", f"/{bucket}/huge.bin", headers, b"",
                    declared=5 * 1024 ** 3 + 1, cut=False)
    assert got == 400 and "<Code>EntityTooLarge</Code>" in text, text
    unchanged(s3, bucket)
    assert leftovers(server) == []


def test_bad_keys_get_s3_errors(server, s3, bucket):
    # NUL cannot appear in a key (S3's listings are XML 1.0, which cannot carry it).
    headers = signed(server, "PUT", f"/{bucket}/a%00b", b"x")
    got, text = raw(server, "PUT", f"/{bucket}/a%00b", headers, b"x")
    assert got == 400 and "<Code>InvalidArgument</Code>" in text, text
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"x")
    assert code(e) == "KeyTooLongError"
    # Traversal-looking keys are names like any other: stored and read back as written,
    # never as paths of the server's disk.
    for key in ("../../../etc/passwd", "/absolute", "a/./b/../c"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
        s3.delete_object(Bucket=bucket, Key=key)
    unchanged(s3, bucket)


def test_the_server_still_serves_after_all_of_it(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="after.txt", Body=b"fine")
    assert s3.get_object(Bucket=bucket, Key="after.txt")["Body"].read() == b"fine"
    assert leftovers(server) == []
