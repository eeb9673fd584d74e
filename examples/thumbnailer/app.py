"""Makes a thumbnail of each image uploaded under in/ (S3 event notifications).

Unmodified boto3: the credentials (the role `thumbnailer`) and the endpoint
(AWS_ENDPOINT_URL_S3) come from the environment Nimbus gives each instance, as on Lambda.
"""

import io
import os
import urllib.parse

import boto3
from PIL import Image, UnidentifiedImageError

s3 = boto3.client("s3")
BUCKET = os.environ.get("THUMBNAIL_BUCKET", "thumbnails")
PREFIX = os.environ.get("THUMBNAIL_PREFIX", "thumbs/")
SIZE = int(os.environ.get("THUMBNAIL_SIZE", "128"))


def thumbnail(data: bytes):
    """The thumbnail of an image (same format, at most SIZE x SIZE) and its content type."""
    image = Image.open(io.BytesIO(data))
    fmt = image.format
    image.thumbnail((SIZE, SIZE))
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue(), Image.MIME.get(fmt, "application/octet-stream"), image.size


def handler(event, context):
    made = []
    for record in event.get("Records", []):
        bucket = record["s3"]["bucket"]["name"]
        # S3 URL-encodes keys in events (a space arrives as '+').
        key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        try:
            thumb, content_type, size = thumbnail(data)
        except (UnidentifiedImageError, OSError) as e:
            print(f"skipping s3://{bucket}/{key}: not an image Pillow can read ({e})")
            continue
        name = key.split("/", 1)[1] if "/" in key else key
        s3.put_object(Bucket=BUCKET, Key=PREFIX + name, Body=thumb, ContentType=content_type,
                      Metadata={"source": f"s3://{bucket}/{key}"})
        print(f"s3://{bucket}/{key} -> s3://{BUCKET}/{PREFIX}{name} ({size[0]}x{size[1]})")
        made.append(PREFIX + name)
    return {"thumbnails": made}
