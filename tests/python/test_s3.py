"""S3 compatibility: unmodified boto3 and the AWS CLI against `nimbus serve --s3-listen`.

One server with `--auth on` for the module (the bootstrap admin key signs; a second key whose
policy allows one bucket prefix shows AccessDenied); the durability test runs its own server
with `--auth off` and kills it with SIGKILL. Run through tests/e2e/s3.rs, or by hand:
`cargo build -p nimbus-cli && python3 -m pytest tests/python/test_s3.py -q`.
"""

import base64
import concurrent.futures
import datetime
import hashlib
import http.client
import io
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
import uuid
import zlib

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from conftest import NimbusServer, REGION, aws_cli, free_port, nimbus_bin

MIB = 1024 * 1024


class S3Nimbus(NimbusServer):
    """A server with an S3 listener on its own free port."""

    def __init__(self, workdir, auth):
        self.s3_port = free_port()
        super().__init__(nimbus_bin(), workdir, auth=auth,
                         extra_args=["--s3-listen", f"127.0.0.1:{self.s3_port}"])
        self.s3_url = f"http://127.0.0.1:{self.s3_port}"


def s3_client(url, key_id, secret, style="path"):
    session = boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret,
                                    region_name=REGION)
    return session.client("s3", endpoint_url=url, config=Config(
        signature_version="s3v4", s3={"addressing_style": style},
        # boto3's default retries: an error answered before the request body was read ends
        # the keep-alive connection (see docs/s3.md), and SDKs retry what was in flight.
        retries={"total_max_attempts": 3, "mode": "standard"}, read_timeout=120))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = S3Nimbus(tmp_path_factory.mktemp("nimbus-s3"), auth=True)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def s3(server):
    return s3_client(server.s3_url, *server.admin_key())


@pytest.fixture
def bucket(s3):
    name = "b-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    return name


def code(exc):
    return exc.value.response["Error"]["Code"]


def status(exc):
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_bucket_lifecycle_and_names(s3):
    name = "life-" + uuid.uuid4().hex[:8]
    s3.create_bucket(Bucket=name)
    s3.head_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.create_bucket(Bucket=name)
    assert code(e) == "BucketAlreadyOwnedByYou" and status(e) == 409
    for bad in ["ab", "Upper-Case", "192.168.0.1", "a..b", "xn--punycode"]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.create_bucket(Bucket=bad)
        assert code(e) == "InvalidBucketName", bad
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.delete_bucket(Bucket=name)
    assert code(e) == "BucketNotEmpty" and status(e) == 409
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_bucket(Bucket=name)
    assert status(e) == 404
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=name, Key="k")
    assert code(e) == "NoSuchBucket"


def test_put_get_head_with_metadata_and_content_headers(s3, bucket):
    body = b"hello, object store"
    put = s3.put_object(
        Bucket=bucket, Key="docs/hello.txt", Body=body, ContentType="text/plain",
        ContentEncoding="identity", ContentDisposition='attachment; filename="h.txt"',
        CacheControl="max-age=60", ContentLanguage="en", Metadata={"owner": "ann", "Run-Id": "7"},
        Tagging="env=test&team=core")
    assert put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
    got = s3.get_object(Bucket=bucket, Key="docs/hello.txt")
    assert got["Body"].read() == body
    assert got["ETag"] == put["ETag"]
    assert got["ContentType"] == "text/plain"
    assert got["ContentEncoding"] == "identity"
    assert got["ContentDisposition"] == 'attachment; filename="h.txt"'
    assert got["CacheControl"] == "max-age=60"
    assert got["ContentLanguage"] == "en"
    assert got["Metadata"] == {"owner": "ann", "run-id": "7"}
    assert got["ContentLength"] == len(body)
    head = s3.head_object(Bucket=bucket, Key="docs/hello.txt")
    assert head["ContentLength"] == len(body) and head["Metadata"]["owner"] == "ann"
    assert abs(head["LastModified"] - datetime.datetime.now(datetime.timezone.utc)) < \
        datetime.timedelta(minutes=1)
    tags = s3.get_object_tagging(Bucket=bucket, Key="docs/hello.txt")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("env", "test"), ("team", "core")]
    s3.put_object_tagging(Bucket=bucket, Key="docs/hello.txt",
                          Tagging={"TagSet": [{"Key": "only", "Value": "one"}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="docs/hello.txt")["TagSet"] == \
        [{"Key": "only", "Value": "one"}]
    # Keys are opaque names: `../` and a leading slash are stored as written.
    for key in ["../../etc/passwd", "/abs/key", "sp ace/ünï"]:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"x")
    assert code(e) == "KeyTooLongError"
    s3.delete_object(Bucket=bucket, Key="docs/hello.txt")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="docs/hello.txt")
    assert code(e) == "NoSuchKey" and status(e) == 404
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket=bucket, Key="docs/hello.txt")
    assert status(e) == 404


def test_delete_objects_and_copy(s3, bucket):
    for k in ["a", "b", "c"]:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode() * 3, Metadata={"k": k})
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"},
                                                               {"Key": "never-existed"}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["a", "b", "never-existed"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["c"]
    copied = s3.copy_object(Bucket=bucket, Key="c-copy", CopySource={"Bucket": bucket, "Key": "c"})
    assert copied["CopyObjectResult"]["ETag"] == '"%s"' % hashlib.md5(b"ccc").hexdigest()
    got = s3.get_object(Bucket=bucket, Key="c-copy")
    assert got["Body"].read() == b"ccc" and got["Metadata"] == {"k": "c"}
    s3.copy_object(Bucket=bucket, Key="c-new", CopySource=f"{bucket}/c",
                   MetadataDirective="REPLACE", Metadata={"fresh": "yes"}, ContentType="x/y")
    got = s3.get_object(Bucket=bucket, Key="c-new")
    assert got["Metadata"] == {"fresh": "yes"} and got["ContentType"] == "x/y"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "missing"})
    assert code(e) == "NoSuchKey"


def test_list_objects_v2_prefix_delimiter_and_continuation(s3, bucket):
    keys = [f"logs/{d:02d}/{i:04d}.log" for d in range(4) for i in range(600)]
    keys += ["logs/readme", "other/x", "top"]

    def put(k):
        s3.put_object(Bucket=bucket, Key=k, Body=b"")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(put, keys))
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 700})
    seen, page_sizes = [], []
    for page in pages:
        page_sizes.append(page["KeyCount"])
        seen += [o["Key"] for o in page.get("Contents", [])]
    assert seen == sorted(keys)
    assert page_sizes[0] == 700 and len(page_sizes) == 4
    root = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in root["CommonPrefixes"]] == ["logs/", "other/"]
    assert [o["Key"] for o in root["Contents"]] == ["top"]
    logs = s3.list_objects_v2(Bucket=bucket, Prefix="logs/", Delimiter="/", MaxKeys=3)
    assert [p["Prefix"] for p in logs["CommonPrefixes"]] == ["logs/00/", "logs/01/", "logs/02/"]
    assert logs["IsTruncated"]
    rest = s3.list_objects_v2(Bucket=bucket, Prefix="logs/", Delimiter="/",
                              ContinuationToken=logs["NextContinuationToken"])
    assert [p["Prefix"] for p in rest["CommonPrefixes"]] == ["logs/03/"]
    assert [o["Key"] for o in rest["Contents"]] == ["logs/readme"]
    assert not rest["IsTruncated"]
    after = s3.list_objects_v2(Bucket=bucket, Prefix="logs/03/", StartAfter="logs/03/0597.log")
    assert [o["Key"] for o in after["Contents"]] == ["logs/03/0598.log", "logs/03/0599.log"]
    v1 = s3.list_objects(Bucket=bucket, Prefix="logs/01/", MaxKeys=2)
    assert [o["Key"] for o in v1["Contents"]] == ["logs/01/0000.log", "logs/01/0001.log"]


def test_range_and_conditional_requests(s3, bucket):
    body = bytes(range(256)) * 4
    etag = s3.put_object(Bucket=bucket, Key="r", Body=body)["ETag"]
    part = s3.get_object(Bucket=bucket, Key="r", Range="bytes=10-19")
    assert part["Body"].read() == body[10:20]
    assert part["ContentRange"] == f"bytes 10-19/{len(body)}"
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=-5")["Body"].read() == body[-5:]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={len(body)}-")
    assert code(e) == "InvalidRange" and status(e) == 416
    assert s3.get_object(Bucket=bucket, Key="r", IfMatch=etag)["Body"].read() == body
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="r", IfMatch='"0000"')
    assert code(e) == "PreconditionFailed" and status(e) == 412
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="r", IfNoneMatch=etag)
    assert status(e) == 304
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    past = datetime.datetime(2001, 1, 1, tzinfo=datetime.timezone.utc)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="r", IfModifiedSince=future)
    assert status(e) == 304
    assert s3.get_object(Bucket=bucket, Key="r", IfModifiedSince=past)["Body"].read() == body
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="r", IfUnmodifiedSince=past)
    assert status(e) == 412
    # Conditional writes: If-None-Match: * creates only.
    s3.put_object(Bucket=bucket, Key="once", Body=b"first", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="once", Body=b"second", IfNoneMatch="*")
    assert code(e) == "PreconditionFailed" and status(e) == 412
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == b"first"


def write_file(path, mib):
    """`mib` MiB of random bytes (no two MiB alike); returns their SHA-256."""
    digest = hashlib.sha256()
    block = os.urandom(MIB)
    with open(path, "wb") as f:
        for i in range(mib):
            chunk = block[:-4] + i.to_bytes(4, "big")
            digest.update(chunk)
            f.write(chunk)
    return digest.digest()


def sha256_of(path):
    got = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            got.update(chunk)
    return got.digest()


def test_transfer_manager_uploads_and_downloads_100_mib(s3, bucket, tmp_path):
    """boto3's transfer manager (what `upload_file` and the AWS CLI use): a 100 MiB file in
    16 MiB parts, four at a time, and back with ranged GETs in parallel."""
    from boto3.s3.transfer import TransferConfig
    src, dst = tmp_path / "big.in", tmp_path / "big.out"
    digest = write_file(src, 100)
    cfg = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=16 * MIB,
                         max_concurrency=4)
    s3.upload_file(str(src), bucket, "big/100.bin", Config=cfg)
    head = s3.head_object(Bucket=bucket, Key="big/100.bin")
    assert head["ContentLength"] == 100 * MIB
    assert head["ETag"].endswith('-7"'), head["ETag"]  # ceil(100 / 16) parts
    s3.download_file(bucket, "big/100.bin", str(dst), Config=cfg)
    assert sha256_of(dst) == digest
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_uploads_after_empty_puts_on_the_same_connections(server, bucket, tmp_path):
    """Regression: botocore sends `Expect: 100-continue` on empty PUTs too, and a final
    response without `100 Continue` (hyper's answer to a bodiless request) leaves the
    stale status on botocore's kept-alive connection; the next `Expect` request on it
    misparsed its response (`KeyError: 'ETag'` in the transfer manager, or a stall until
    the read timeout). Nimbus closes such connections (docs/s3.md). A client of its own
    (its own connection pool) with no retries and a short read timeout, so that the bug
    fails the test quickly instead of being retried away."""
    from boto3.s3.transfer import TransferConfig
    session = boto3.session.Session(*server.admin_key(), region_name=REGION)
    s3 = session.client("s3", endpoint_url=server.s3_url, config=Config(
        signature_version="s3v4", s3={"addressing_style": "path"},
        retries={"total_max_attempts": 1}, read_timeout=10, max_pool_connections=4))

    def empty(i):
        s3.put_object(Bucket=bucket, Key=f"empty/{i:04d}", Body=b"")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(empty, range(200)))
    # Sequential: each PUT takes the connection the previous one gave back.
    for i in range(4):
        s3.put_object(Bucket=bucket, Key=f"empty/again{i}", Body=b"")
        got = s3.put_object(Bucket=bucket, Key=f"small/{i}", Body=b"x" * 1000)
        assert got["ETag"] == '"%s"' % hashlib.md5(b"x" * 1000).hexdigest()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(empty, range(200, 400)))
    src = tmp_path / "after-empty.bin"
    digest = write_file(src, 24)
    cfg = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=6 * MIB,
                         max_concurrency=4)
    s3.upload_file(str(src), bucket, "after-empty.bin", Config=cfg)
    dst = tmp_path / "after-empty.out"
    s3.download_file(bucket, "after-empty.bin", str(dst))
    assert sha256_of(dst) == digest
    assert len(s3.list_objects_v2(Bucket=bucket, Prefix="empty/")["Contents"]) == 404


def test_multipart_upload_of_20_mib(s3, bucket):
    parts_data = [os.urandom(5 * MIB) for _ in range(4)] + [os.urandom(MIB // 2)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="big.bin", ContentType="app/bin",
                                    Metadata={"origin": "mpu"})
    uid = up["UploadId"]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [uid]
    etags = []
    for n, data in enumerate(parts_data, start=1):
        etags.append(s3.upload_part(Bucket=bucket, Key="big.bin", UploadId=uid, PartNumber=n,
                                    Body=data)["ETag"])
    listed = s3.list_parts(Bucket=bucket, Key="big.bin", UploadId=uid)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2, 3, 4, 5]
    assert [p["Size"] for p in listed["Parts"]] == [len(d) for d in parts_data]
    # Parts out of order and a wrong ETag are refused; nothing changes.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="big.bin", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}]})
    assert code(e) == "InvalidPartOrder"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="big.bin", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": '"ffffffffffffffffffffffffffffffff"'}]})
    assert code(e) == "InvalidPart"
    done = s3.complete_multipart_upload(Bucket=bucket, Key="big.bin", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": t} for n, t in enumerate(etags, start=1)]})
    md5s = b"".join(hashlib.md5(d).digest() for d in parts_data)
    assert done["ETag"] == '"%s-5"' % hashlib.md5(md5s).hexdigest()
    got = s3.get_object(Bucket=bucket, Key="big.bin")
    whole = b"".join(parts_data)
    assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(whole).digest()
    assert got["ContentType"] == "app/bin" and got["Metadata"] == {"origin": "mpu"}
    assert got["ETag"] == done["ETag"]
    ranged = s3.get_object(Bucket=bucket, Key="big.bin", Range=f"bytes={5 * MIB - 3}-{5 * MIB + 2}")
    assert ranged["Body"].read() == whole[5 * MIB - 3:5 * MIB + 3]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.list_parts(Bucket=bucket, Key="big.bin", UploadId=uid)
    assert code(e) == "NoSuchUpload"
    # Too-small parts, then abort.
    small = s3.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    t1 = s3.upload_part(Bucket=bucket, Key="small", UploadId=small, PartNumber=1, Body=b"a")["ETag"]
    t2 = s3.upload_part(Bucket=bucket, Key="small", UploadId=small, PartNumber=2, Body=b"b")["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="small", UploadId=small, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": t1}, {"PartNumber": 2, "ETag": t2}]})
    assert code(e) == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket=bucket, Key="small", UploadId=small)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_upload_part_copy_with_ranges_then_reading_parts(s3, bucket):
    """UploadPartCopy (whole sources and `x-amz-copy-source-range`), then GetObject and
    HeadObject with `partNumber`."""
    src = os.urandom(6 * MIB + 11)
    s3.put_object(Bucket=bucket, Key="src", Body=src)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    first = s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=uid, PartNumber=1,
                                CopySource={"Bucket": bucket, "Key": "src"},
                                CopySourceRange=f"bytes=0-{5 * MIB}")["CopyPartResult"]
    assert first["ETag"] == '"%s"' % hashlib.md5(src[:5 * MIB + 1]).hexdigest()
    second = s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=uid, PartNumber=2,
                                 CopySource=f"{bucket}/src")["CopyPartResult"]
    third = s3.upload_part(Bucket=bucket, Key="assembled", UploadId=uid, PartNumber=3,
                           Body=b"tail")
    for bad in [f"bytes=0-{len(src)}", "bytes=5-", "bytes=9-3", "rows=0-1"]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=uid, PartNumber=4,
                                CopySource={"Bucket": bucket, "Key": "src"},
                                CopySourceRange=bad)
        assert code(e) == "InvalidArgument" and status(e) == 400, bad
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=uid, PartNumber=4,
                            CopySource={"Bucket": bucket, "Key": "src"},
                            CopySourceIfMatch='"0000"')
    assert code(e) == "PreconditionFailed" and status(e) == 412
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=uid, PartNumber=4,
                            CopySource={"Bucket": bucket, "Key": "missing"})
    assert code(e) == "NoSuchKey"
    s3.complete_multipart_upload(Bucket=bucket, Key="assembled", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": first["ETag"]},
                  {"PartNumber": 2, "ETag": second["ETag"]},
                  {"PartNumber": 3, "ETag": third["ETag"]}]})
    whole = src[:5 * MIB + 1] + src + b"tail"
    assert s3.get_object(Bucket=bucket, Key="assembled")["Body"].read() == whole
    starts = [0, 5 * MIB + 1, 5 * MIB + 1 + len(src), len(whole)]
    for n in (1, 2, 3):
        got = s3.get_object(Bucket=bucket, Key="assembled", PartNumber=n)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["PartsCount"] == 3
        assert got["ContentRange"] == f"bytes {starts[n - 1]}-{starts[n] - 1}/{len(whole)}"
        assert got["Body"].read() == whole[starts[n - 1]:starts[n]]
        head = s3.head_object(Bucket=bucket, Key="assembled", PartNumber=n)
        assert head["ContentLength"] == starts[n] - starts[n - 1] and head["PartsCount"] == 3
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="assembled", PartNumber=4)
    assert code(e) == "InvalidPartNumber" and status(e) == 416
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_object(Bucket=bucket, Key="assembled", PartNumber=1, Range="bytes=0-1")
    assert code(e) == "InvalidRequest"
    # A single-part object is its own part 1.
    one = s3.get_object(Bucket=bucket, Key="src", PartNumber=1)
    assert one["Body"].read() == src and "PartsCount" not in one
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.head_object(Bucket=bucket, Key="src", PartNumber=2)
    assert status(e) == 416


def crc_reflected(data, poly, width):
    """A reflected CRC with all-ones init and final XOR (CRC32C, CRC64/NVME), bit by bit: an
    implementation independent of the server's."""
    mask = (1 << width) - 1
    crc = mask
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return (crc ^ mask).to_bytes(width // 8, "big")


def b64(digest):
    return base64.b64encode(digest).decode()


def test_checksums_verified_stored_and_returned(s3, bucket):
    body = b"checksum me " * 500
    expected = {
        "CRC32": b64(zlib.crc32(body).to_bytes(4, "big")),
        "CRC32C": b64(crc_reflected(body, 0x82F63B78, 32)),
        "CRC64NVME": b64(crc_reflected(body, 0x9A6C9329AC4BC9B5, 64)),
        "SHA1": b64(hashlib.sha1(body).digest()),
        "SHA256": b64(hashlib.sha256(body).digest()),
    }
    # boto3 sends a CRC32 by default.
    put = s3.put_object(Bucket=bucket, Key="c/default", Body=body)
    assert put["ChecksumCRC32"] == expected["CRC32"]
    head = s3.head_object(Bucket=bucket, Key="c/default", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == expected["CRC32"] and head["ChecksumType"] == "FULL_OBJECT"
    assert "ChecksumCRC32" not in s3.head_object(Bucket=bucket, Key="c/default")
    for alg, value in expected.items():
        # Each algorithm's header, with the value computed here (boto3 needs the CRT for
        # some of them).
        put = s3.put_object(Bucket=bucket, Key=f"c/{alg}", Body=body, **{f"Checksum{alg}": value})
        assert put[f"Checksum{alg}"] == value, alg
        # botocore checks a returned checksum against the body it reads.
        got = s3.get_object(Bucket=bucket, Key=f"c/{alg}", ChecksumMode="ENABLED")
        assert got[f"Checksum{alg}"] == value and got["Body"].read() == body, alg
        wrong = expected["SHA256" if alg != "SHA256" else "SHA1"]
        other = {"SHA256": b64(hashlib.sha256(b"other").digest()),
                 "SHA1": b64(hashlib.sha1(b"other").digest()),
                 "CRC32": b64(zlib.crc32(b"other").to_bytes(4, "big")),
                 "CRC32C": b64(crc_reflected(b"other", 0x82F63B78, 32)),
                 "CRC64NVME": b64(crc_reflected(b"other", 0x9A6C9329AC4BC9B5, 64))}[alg]
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.put_object(Bucket=bucket, Key=f"c/bad-{alg}", Body=body, **{f"Checksum{alg}": other})
        assert code(e) == "BadDigest" and status(e) == 400, alg
        assert del_status(s3, bucket, f"c/bad-{alg}") == 404
        if alg in ("CRC32", "CRC32C"):  # a value of the wrong size
            with pytest.raises(botocore.exceptions.ClientError) as e:
                s3.put_object(Bucket=bucket, Key="c/x", Body=body, **{f"Checksum{alg}": wrong})
            assert code(e) == "InvalidRequest", alg
    # A ranged read gets no whole-object checksum.
    ranged = s3.get_object(Bucket=bucket, Key="c/SHA256", Range="bytes=0-9", ChecksumMode="ENABLED")
    assert "ChecksumSHA256" not in ranged and ranged["Body"].read() == body[:10]


def del_status(s3, bucket, key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return 200
    except botocore.exceptions.ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"]


def test_multipart_checksums_are_composite(s3, bucket):
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), b"last part"]
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mc", ChecksumAlgorithm="SHA256")["UploadId"]
    done = []
    for n, data in enumerate(parts, start=1):
        r = s3.upload_part(Bucket=bucket, Key="mc", UploadId=uid, PartNumber=n, Body=data,
                           ChecksumSHA256=b64(hashlib.sha256(data).digest()))
        assert r["ChecksumSHA256"] == b64(hashlib.sha256(data).digest())
        done.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumSHA256": r["ChecksumSHA256"]})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="mc", UploadId=uid, PartNumber=4, Body=b"x",
                       ChecksumSHA256=b64(hashlib.sha256(b"y").digest()))
    assert code(e) == "BadDigest"
    listed = s3.list_parts(Bucket=bucket, Key="mc", UploadId=uid)["Parts"]
    assert [p["ChecksumSHA256"] for p in listed] == [p["ChecksumSHA256"] for p in done]
    s3.complete_multipart_upload(Bucket=bucket, Key="mc", UploadId=uid,
                                 MultipartUpload={"Parts": done})
    joined = b"".join(hashlib.sha256(d).digest() for d in parts)
    composite = f"{b64(hashlib.sha256(joined).digest())}-3"
    head = s3.head_object(Bucket=bucket, Key="mc", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == composite and head["ChecksumType"] == "COMPOSITE"
    # boto3's transfer manager with its default CRC32, back with identical bytes.
    from boto3.s3.transfer import TransferConfig
    data = os.urandom(12 * MIB)
    s3.upload_fileobj(io.BytesIO(data), bucket, "mc-crc32", Config=TransferConfig(
        multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB))
    head = s3.head_object(Bucket=bucket, Key="mc-crc32", ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32", "").endswith("-3"), head
    assert s3.get_object(Bucket=bucket, Key="mc-crc32")["Body"].read() == data


def test_bucket_quota_from_tags(s3, bucket):
    """A bucket's `nimbus:quota-objects` / `nimbus:quota-bytes` tags cap what it holds
    (403 QuotaExceeded); its other tags are ordinary bucket tags."""
    tags = [{"Key": "nimbus:quota-objects", "Value": "2"},
            {"Key": "nimbus:quota-bytes", "Value": str(MIB)}, {"Key": "team", "Value": "core"}]
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tags})
    got = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    assert sorted(got, key=lambda t: t["Key"]) == sorted(tags, key=lambda t: t["Key"])
    s3.put_object(Bucket=bucket, Key="q1", Body=b"a")
    s3.put_object(Bucket=bucket, Key="q2", Body=b"b")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="q3", Body=b"c")
    assert code(e) == "QuotaExceeded" and status(e) == 403
    assert "2" in e.value.response["Error"]["Message"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_object(Bucket=bucket, Key="q1", Body=os.urandom(MIB))
    assert code(e) == "QuotaExceeded"
    s3.delete_object(Bucket=bucket, Key="q2")
    s3.put_object(Bucket=bucket, Key="q3", Body=b"c")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [
            {"Key": "nimbus:quota-bytes", "Value": "lots"}]})
    assert code(e) == "InvalidTag" and status(e) == 400
    s3.delete_bucket_tagging(Bucket=bucket)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_bucket_tagging(Bucket=bucket)
    assert code(e) == "NoSuchTagSet" and status(e) == 404
    s3.put_object(Bucket=bucket, Key="q4", Body=b"d")


def test_bucket_notification_configuration(s3, bucket):
    config = {
        "LambdaFunctionConfigurations": [{
            "Id": "thumbs",
            "LambdaFunctionArn": "arn:aws:lambda:us-east-1:000000000000:function:thumbs",
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "in/"},
                                               {"Name": "suffix", "Value": ".jpg"}]}},
        }],
        "QueueConfigurations": [{
            "QueueArn": "arn:aws:sqs:us-east-1:000000000000:removed",
            "Events": ["s3:ObjectRemoved:*"],
        }],
        "EventBridgeConfiguration": {},
    }
    # The function and the queue do not exist: skip S3's destination check (tested in
    # test_s3_notifications.py).
    out = s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config,
                                                   SkipDestinationValidation=True)
    headers = out["ResponseMetadata"]["HTTPHeaders"]
    assert len(headers["x-amz-request-id"]) == 16 and headers["x-amz-id-2"]
    got = s3.get_bucket_notification_configuration(Bucket=bucket)
    f = got["LambdaFunctionConfigurations"][0]
    assert f["Id"] == "thumbs" and f["Events"] == ["s3:ObjectCreated:*"]
    assert f["LambdaFunctionArn"] == config["LambdaFunctionConfigurations"][0]["LambdaFunctionArn"]
    # S3 answers the rule names capitalised.
    assert f["Filter"]["Key"]["FilterRules"] == [{"Name": "Prefix", "Value": "in/"},
                                                 {"Name": "Suffix", "Value": ".jpg"}]
    q = got["QueueConfigurations"][0]
    assert q["QueueArn"] == "arn:aws:sqs:us-east-1:000000000000:removed" and q["Id"]
    assert got["EventBridgeConfiguration"] == {}

    def refused(cfg):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=cfg)
        assert code(e) == "InvalidArgument" and status(e) == 400
        return e.value.response["Error"]["Message"]

    assert "SNS" in refused({"TopicConfigurations": [{
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:t", "Events": ["s3:ObjectCreated:*"]}]})
    assert "not supported" in refused({"QueueConfigurations": [{
        "QueueArn": "arn:aws:sqs:us-east-1:000000000000:q", "Events": ["s3:ObjectCreated:Nope"]}]})
    assert refused({"QueueConfigurations": [{
        "QueueArn": "arn:aws:sqs:us-east-1:000000000000:q", "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "a"},
                                           {"Name": "prefix", "Value": "b"}]}}}]}) \
        == "Cannot specify more than one prefix rule in a filter."
    assert "ARN" in refused({"LambdaFunctionConfigurations": [{
        "LambdaFunctionArn": "thumbs", "Events": ["s3:ObjectCreated:*"]}]})
    # A refused configuration left the stored one alone; an empty one turns notifications off.
    assert s3.get_bucket_notification_configuration(Bucket=bucket)["LambdaFunctionConfigurations"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
    got = s3.get_bucket_notification_configuration(Bucket=bucket)
    assert not any(k in got for k in ("LambdaFunctionConfigurations", "QueueConfigurations",
                                      "EventBridgeConfiguration"))


def test_presigned_put_and_get(s3, bucket, tmp_path):
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre.txt"},
                                        ExpiresIn=300)
    # The upload as a user would script it: curl, no SDK.
    (tmp_path / "pre.txt").write_bytes(b"presigned bytes")
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T",
                          str(tmp_path / "pre.txt"), put_url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "200", (out.stdout, out.stderr)
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre.txt"},
                                        ExpiresIn=300)
    with urllib.request.urlopen(get_url, timeout=30) as r:
        assert r.read() == b"presigned bytes"
    # A tampered signature is refused with S3's XML error.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(get_url[:-4] + "0000", timeout=30)
    assert e.value.code == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in e.value.read()


def test_virtual_hosted_style(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="vh/key.txt", Body=b"virtual host")
    virtual = s3_client(f"http://localhost:{server.s3_port}", *server.admin_key(), style="virtual")
    url = virtual.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "vh/key.txt"})
    host = f"{bucket}.localhost:{server.s3_port}"
    assert f"//{host}/vh/key.txt" in url
    path = url.split(host, 1)[1]
    conn = http.client.HTTPConnection("127.0.0.1", server.s3_port, timeout=30)
    conn.request("GET", path, headers={"Host": host})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b"virtual host"


def test_wrong_secret_and_scoped_key(server, s3, bucket):
    key_id, secret = server.admin_key()
    wrong = s3_client(server.s3_url, key_id, secret[::-1])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        wrong.list_buckets()
    assert code(e) == "SignatureDoesNotMatch" and status(e) == 403
    unknown = s3_client(server.s3_url, "AKIAUNKNOWNUNKNOWN00", secret)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        unknown.list_buckets()
    assert code(e) == "InvalidAccessKeyId"
    other = "o-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=other, Key="secret", Body=b"no")
    s3.put_object(Bucket=bucket, Key="private/p", Body=b"no")
    scoped = s3_client(server.s3_url, *server.create_key("s3-scoped-" + uuid.uuid4().hex[:6], {
        "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
                       "Resource": [f"arn:aws:s3:::{bucket}/shared/*"]},
                      {"Effect": "Allow", "Action": "s3:ListBucket",
                       "Resource": f"arn:aws:s3:::{bucket}"}]}))
    scoped.put_object(Bucket=bucket, Key="shared/mine", Body=b"ok")
    assert scoped.get_object(Bucket=bucket, Key="shared/mine")["Body"].read() == b"ok"
    assert scoped.list_objects_v2(Bucket=bucket, Prefix="shared/")["KeyCount"] == 1
    for call in [lambda: scoped.get_object(Bucket=bucket, Key="private/p"),
                 lambda: scoped.get_object(Bucket=other, Key="secret"),
                 lambda: scoped.put_object(Bucket=other, Key="x", Body=b"x"),
                 lambda: scoped.delete_object(Bucket=bucket, Key="shared/mine"),
                 lambda: scoped.create_bucket(Bucket="scoped-" + uuid.uuid4().hex[:8])]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code(e) == "AccessDenied" and status(e) == 403
    assert s3.get_object(Bucket=bucket, Key="shared/mine")["Body"].read() == b"ok"


def test_aws_cli_sync_up_and_down(server, s3, bucket, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    # dir/big.bin is over the CLI's 8 MiB multipart threshold: a multipart upload up and
    # ranged GETs down.
    files = {"a.txt": b"alpha", "dir/b.bin": os.urandom(3 * MIB), "dir/deep/c": b"",
             "dir/deep/d e.txt": b"spaces", "dir/big.bin": os.urandom(20 * MIB + 7)}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    key_id, secret = server.admin_key()
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret)

    def run(*args):
        out = subprocess.run([aws_cli(), "s3", *args, "--endpoint-url", server.s3_url],
                             capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr + out.stdout
        return out.stdout

    run("sync", str(src), f"s3://{bucket}/tree")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="tree/")["Contents"])
    assert keys == sorted("tree/" + k for k in files)
    run("sync", f"s3://{bucket}/tree", str(dst))
    for rel, data in files.items():
        assert (dst / rel).read_bytes() == data, rel
    # A second sync has nothing to do.
    assert run("sync", str(src), f"s3://{bucket}/tree").strip() == ""
    run("cp", str(src / "a.txt"), f"s3://{bucket}/copied.txt")
    assert s3.get_object(Bucket=bucket, Key="copied.txt")["Body"].read() == b"alpha"


def test_acknowledged_puts_survive_kill_9(tmp_path):
    """`--auth off`: unsigned requests work; objects acknowledged before SIGKILL are all there
    after a restart."""
    srv = S3Nimbus(tmp_path, auth=False)
    srv.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.s3_port, timeout=30)
        conn.request("PUT", "/durable")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        bodies = {f"k/{i}": os.urandom(1000 + i) for i in range(60)}
        for key, data in bodies.items():
            conn.request("PUT", f"/durable/{key}", body=data)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, key
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        srv.start()
        s3 = s3_client(srv.s3_url, "anything", "anything")
        for key, data in bodies.items():
            assert s3.get_object(Bucket="durable", Key=key)["Body"].read() == data, key
        assert s3.list_objects_v2(Bucket="durable")["KeyCount"] == len(bodies)
    finally:
        srv.stop()


CORS_RULES = [
    {"ID": "web", "AllowedOrigins": ["https://app.example.com", "https://*.example.org"],
     "AllowedMethods": ["GET", "PUT"], "AllowedHeaders": ["content-type", "x-amz-*"],
     "ExposeHeaders": ["ETag", "x-amz-request-id"], "MaxAgeSeconds": 600},
    {"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "HEAD"]},
]


def preflight(server, bucket, key, origin, method, headers=None):
    """An `OPTIONS` preflight as a browser sends it (unsigned): (status, headers, body)."""
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    conn = http.client.HTTPConnection("127.0.0.1", server.s3_port, timeout=30)
    conn.request("OPTIONS", f"/{bucket}/{key}", headers=h)
    resp = conn.getresponse()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def test_bucket_cors_configuration_round_trip_and_errors(s3, bucket):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_bucket_cors(Bucket=bucket)
    assert code(e) == "NoSuchCORSConfiguration" and status(e) == 404
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": CORS_RULES})
    got = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert got[0] == CORS_RULES[0]
    assert got[1] == CORS_RULES[1]
    for bad in ({"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]},
                {"AllowedOrigins": ["https://*.*.example"], "AllowedMethods": ["GET"]}):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [bad]})
        assert code(e) == "InvalidRequest" and status(e) == 400
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={
            "CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}] * 101})
    assert code(e) == "InvalidRequest"
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"][0]["ID"] == "web", "unchanged"
    s3.delete_bucket_cors(Bucket=bucket)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_bucket_cors(Bucket=bucket)
    assert code(e) == "NoSuchCORSConfiguration"


def test_cors_preflight_then_presigned_put_from_a_browser_origin(server, s3, bucket):
    origin = "https://app.example.com"
    # No configuration: every preflight is refused.
    st, _, body = preflight(server, bucket, "up.txt", origin, "PUT", "content-type")
    assert st == 403 and b"<Code>AccessForbidden</Code>" in body
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": CORS_RULES})
    st, h, _ = preflight(server, bucket, "up.txt", origin, "PUT", "content-type")
    assert st == 200
    assert h["access-control-allow-origin"] == origin
    assert h["access-control-allow-credentials"] == "true"
    assert "PUT" in h["access-control-allow-methods"]
    assert h["access-control-allow-headers"] == "content-type"
    assert h["access-control-max-age"] == "600"
    assert h["vary"] == "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"
    # A wildcard origin pattern.
    st, h, _ = preflight(server, bucket, "up.txt", "https://cdn.example.org", "PUT")
    assert st == 200 and h["access-control-allow-origin"] == "https://cdn.example.org"
    # Disallowed origin, method or header: 403 AccessForbidden.
    for args in (("https://evil.test", "PUT", "content-type"),
                 (origin, "DELETE", None),
                 (origin, "PUT", "x-custom")):
        st, h, body = preflight(server, bucket, "up.txt", *args)
        assert st == 403, args
        assert b"<Code>AccessForbidden</Code>" in body
        assert b"CORSResponse: This CORS request is not allowed" in body
        assert "access-control-allow-origin" not in h
    # The `*` rule answers any origin for GET, with `*` and no credentials.
    st, h, _ = preflight(server, bucket, "up.txt", "https://evil.test", "GET")
    assert st == 200 and h["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in h

    # The presigned PUT, as the browser sends it after the preflight.
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "up.txt"},
                                        ExpiresIn=300)
    req = urllib.request.Request(put_url, data=b"from the browser", method="PUT",
                                 headers={"Origin": origin, "Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == origin
        assert r.headers["Access-Control-Allow-Credentials"] == "true"
        assert r.headers["Access-Control-Expose-Headers"] == "ETag, x-amz-request-id"
        assert "Origin" in r.headers["Vary"]
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "up.txt"},
                                        ExpiresIn=300)
    req = urllib.request.Request(get_url, headers={"Origin": "https://elsewhere.test"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.read() == b"from the browser"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
    # An origin no rule allows gets the object but no CORS headers.
    req = urllib.request.Request(put_url, data=b"again", method="PUT",
                                 headers={"Origin": "https://evil.test"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] is None


def test_bucket_lifecycle_configuration_round_trip_and_refusals(s3, bucket):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert code(e) == "NoSuchLifecycleConfiguration" and status(e) == 404
    rules = [
        {"ID": "tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
         "Expiration": {"Days": 7}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}},
        {"ID": "tagged", "Status": "Disabled",
         "Filter": {"And": {"Prefix": "logs/", "Tags": [{"Key": "class", "Value": "debug"}]}},
         "Expiration": {"Date": datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)}},
        {"ID": "one-tag", "Status": "Enabled", "Filter": {"Tag": {"Key": "expire", "Value": "yes"}},
         "Expiration": {"Days": 1}},
    ]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket,
                                          LifecycleConfiguration={"Rules": rules})
    got = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [r["ID"] for r in got] == ["tmp", "tagged", "one-tag"]
    assert got[0]["Filter"] == {"Prefix": "tmp/"}
    assert got[0]["Expiration"] == {"Days": 7}
    assert got[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 2}
    assert got[1]["Status"] == "Disabled"
    assert got[1]["Filter"]["And"]["Tags"] == [{"Key": "class", "Value": "debug"}]
    assert got[1]["Expiration"]["Date"] == rules[1]["Expiration"]["Date"]
    assert got[2]["Filter"] == {"Tag": {"Key": "expire", "Value": "yes"}}

    def refused(rule):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            s3.put_bucket_lifecycle_configuration(Bucket=bucket,
                                                  LifecycleConfiguration={"Rules": [rule]})
        return code(e)

    base = {"ID": "r", "Status": "Enabled", "Filter": {"Prefix": ""}}
    assert refused({**base, "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}]}) \
        == "NotImplemented"
    assert refused({**base, "NoncurrentVersionExpiration": {"NoncurrentDays": 3}}) \
        == "NotImplemented"
    assert refused({**base, "Expiration": {"Days": 0}}) == "InvalidArgument"
    assert refused({**base, "Expiration": {"Date": datetime.datetime(
        2030, 1, 1, 12, tzinfo=datetime.timezone.utc)}}) == "InvalidArgument"
    assert refused(base) == "InvalidRequest"
    assert refused({"ID": "t", "Status": "Enabled",
                    "Filter": {"Tag": {"Key": "k", "Value": "v"}},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}) \
        == "InvalidRequest"
    # The stored configuration is unchanged by refused ones.
    assert len(s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]) == 3
    s3.delete_bucket_lifecycle(Bucket=bucket)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    assert code(e) == "NoSuchLifecycleConfiguration"


def test_cors_and_lifecycle_permissions(server, s3, bucket):
    """Reading needs s3:GetBucketCORS / s3:GetLifecycleConfiguration; writing and deleting
    need s3:PutBucketCORS / s3:PutLifecycleConfiguration (IAM has no delete actions)."""
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": CORS_RULES})
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        {"ID": "r", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
         "Expiration": {"Days": 1}}]})
    reader = s3_client(server.s3_url, *server.create_key("s3-cfg-" + uuid.uuid4().hex[:6], {
        "Statement": [{"Effect": "Allow",
                       "Action": ["s3:GetBucketCORS", "s3:GetLifecycleConfiguration"],
                       "Resource": f"arn:aws:s3:::{bucket}"}]}))
    assert reader.get_bucket_cors(Bucket=bucket)["CORSRules"][0]["ID"] == "web"
    assert reader.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]["ID"] == "r"
    for call in [lambda: reader.put_bucket_cors(Bucket=bucket, CORSConfiguration={
                     "CORSRules": CORS_RULES[1:]}),
                 lambda: reader.delete_bucket_cors(Bucket=bucket),
                 lambda: reader.delete_bucket_lifecycle(Bucket=bucket),
                 lambda: reader.put_bucket_lifecycle_configuration(
                     Bucket=bucket, LifecycleConfiguration={"Rules": []})]:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code(e) == "AccessDenied" and status(e) == 403
    assert len(s3.get_bucket_cors(Bucket=bucket)["CORSRules"]) == 2
