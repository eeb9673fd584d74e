//! Schema migrations of `objects.db`; entry `i` takes `user_version` from `i` to `i + 1`.

pub(crate) const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE buckets (
    name       TEXT PRIMARY KEY NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
-- How many object and part rows refer to each blob (DATA_DIR/objects/xx/HASH).
CREATE TABLE blobs (
    sha256 TEXT PRIMARY KEY NOT NULL,
    refs   INTEGER NOT NULL CHECK (refs > 0)
) STRICT, WITHOUT ROWID;
-- Keys are BLOBs so comparisons are plain byte order (S3 lists in UTF-8 byte order) and a
-- successor bound like 'a/' + 1 needs no valid UTF-8.
CREATE TABLE objects (
    bucket           TEXT NOT NULL REFERENCES buckets(name),
    key              BLOB NOT NULL,
    sha256           TEXT NOT NULL,
    size             INTEGER NOT NULL,
    etag             TEXT NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    attrs            TEXT NOT NULL,
    tags             TEXT NOT NULL DEFAULT '{}',
    parts            INTEGER,
    PRIMARY KEY (bucket, key)
) STRICT, WITHOUT ROWID;
CREATE TABLE uploads (
    upload_id  TEXT PRIMARY KEY NOT NULL,
    bucket     TEXT NOT NULL REFERENCES buckets(name),
    key        BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    attrs      TEXT NOT NULL
) STRICT;
CREATE INDEX uploads_by_key ON uploads (bucket, key, created_ms);
CREATE INDEX uploads_by_age ON uploads (created_ms);
CREATE TABLE parts (
    upload_id        TEXT NOT NULL REFERENCES uploads(upload_id) ON DELETE CASCADE,
    number           INTEGER NOT NULL,
    sha256           TEXT NOT NULL,
    size             INTEGER NOT NULL,
    etag             TEXT NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    PRIMARY KEY (upload_id, number)
) STRICT, WITHOUT ROWID;
",
    "
-- A bucket's notification configuration (JSON), removed with the bucket.
CREATE TABLE notification_configs (
    bucket TEXT PRIMARY KEY NOT NULL REFERENCES buckets(name) ON DELETE CASCADE,
    config TEXT NOT NULL
) STRICT, WITHOUT ROWID;
-- The outbox: notifications recorded with the writes that caused them, until delivered.
-- AUTOINCREMENT: a sequence number is never reused, even after the newest rows are removed.
CREATE TABLE notification_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket     TEXT NOT NULL,
    target     TEXT NOT NULL CHECK (target IN ('function', 'queue', 'eventbridge')),
    arn        TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
-- The last S3 event sequencer handed out (one row, id 0).
CREATE TABLE notification_sequencer (
    id   INTEGER PRIMARY KEY CHECK (id = 0),
    last INTEGER NOT NULL
) STRICT;
",
    "
-- A bucket's CORS and lifecycle configurations (JSON), removed with the bucket.
CREATE TABLE bucket_configs (
    bucket TEXT NOT NULL REFERENCES buckets(name) ON DELETE CASCADE,
    kind   TEXT NOT NULL CHECK (kind IN ('cors', 'lifecycle')),
    config TEXT NOT NULL,
    PRIMARY KEY (bucket, kind)
) STRICT, WITHOUT ROWID;
",
    "
-- The sizes of a multipart object's parts, in order (JSON array; GET/HEAD ?partNumber=N).
-- NULL for single-part objects and for multipart objects completed before this column.
ALTER TABLE objects ADD COLUMN part_sizes TEXT;
",
    "
-- S3's additional checksum of an object or a part (JSON: algorithm, base64 value, composite).
ALTER TABLE objects ADD COLUMN checksum TEXT;
ALTER TABLE parts ADD COLUMN checksum TEXT;
",
    "
-- Objects and bytes per bucket (quotas), kept by the triggers below in the transaction of
-- every write. An overwrite deletes the old row first, so the delete trigger sees it.
CREATE TABLE bucket_usage (
    bucket  TEXT PRIMARY KEY NOT NULL,
    objects INTEGER NOT NULL,
    bytes   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO bucket_usage (bucket, objects, bytes)
    SELECT bucket, COUNT(*), SUM(size) FROM objects GROUP BY bucket;
CREATE TRIGGER objects_usage_insert AFTER INSERT ON objects BEGIN
    INSERT INTO bucket_usage (bucket, objects, bytes) VALUES (NEW.bucket, 1, NEW.size)
        ON CONFLICT (bucket) DO UPDATE SET objects = objects + 1, bytes = bytes + NEW.size;
END;
CREATE TRIGGER objects_usage_delete AFTER DELETE ON objects BEGIN
    UPDATE bucket_usage SET objects = objects - 1, bytes = bytes - OLD.size
        WHERE bucket = OLD.bucket;
END;
CREATE TRIGGER objects_usage_update AFTER UPDATE OF size ON objects BEGIN
    UPDATE bucket_usage SET bytes = bytes - OLD.size + NEW.size WHERE bucket = NEW.bucket;
END;
-- A bucket's tags (PutBucketTagging; JSON object), removed with the bucket.
CREATE TABLE bucket_tags (
    bucket TEXT PRIMARY KEY NOT NULL REFERENCES buckets(name) ON DELETE CASCADE,
    tags   TEXT NOT NULL
) STRICT, WITHOUT ROWID;
",
];
