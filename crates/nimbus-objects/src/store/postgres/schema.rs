//! The `objects_…` tables: the SQLite schema (all its migrations folded into one) in
//! PostgreSQL's types. Keys are `BYTEA`, as they are BLOBs in SQLite, so they compare in
//! plain byte order (S3 lists in UTF-8 byte order) and a successor bound needs no valid
//! UTF-8; bucket names are `COLLATE "C"` (byte order too).

use nimbus_pg::Migration;

pub(super) const COMPONENT: &str = "objects";

pub(super) const MIGRATIONS: &[Migration] = &[Migration::breaking(
    r#"
CREATE TABLE objects_buckets (
    name       TEXT COLLATE "C" PRIMARY KEY,
    created_ms BIGINT NOT NULL
);
-- Objects and bytes per bucket (quotas). Made with the bucket and removed with it; every
-- write of an object row locks it first (FOR UPDATE) and updates it in its transaction.
CREATE TABLE objects_bucket_usage (
    bucket  TEXT COLLATE "C" PRIMARY KEY REFERENCES objects_buckets(name) ON DELETE CASCADE,
    objects BIGINT NOT NULL,
    bytes   BIGINT NOT NULL
);
-- How many object and part rows refer to each blob (DATA_DIR/objects/xx/HASH).
CREATE TABLE objects_blobs (
    sha256 TEXT COLLATE "C" PRIMARY KEY,
    refs   BIGINT NOT NULL CHECK (refs > 0)
);
CREATE TABLE objects_objects (
    bucket           TEXT COLLATE "C" NOT NULL REFERENCES objects_buckets(name),
    key              BYTEA NOT NULL,
    sha256           TEXT NOT NULL,
    size             BIGINT NOT NULL,
    etag             TEXT NOT NULL,
    last_modified_ms BIGINT NOT NULL,
    attrs            TEXT NOT NULL,
    tags             TEXT NOT NULL DEFAULT '{}',
    parts            BIGINT,
    part_sizes       TEXT,
    checksum         TEXT,
    PRIMARY KEY (bucket, key)
);
CREATE TABLE objects_uploads (
    upload_id  TEXT COLLATE "C" PRIMARY KEY,
    bucket     TEXT COLLATE "C" NOT NULL REFERENCES objects_buckets(name),
    key        BYTEA NOT NULL,
    created_ms BIGINT NOT NULL,
    attrs      TEXT NOT NULL
);
CREATE INDEX objects_uploads_by_key ON objects_uploads (bucket, key, created_ms);
CREATE INDEX objects_uploads_by_age ON objects_uploads (created_ms);
CREATE TABLE objects_parts (
    upload_id        TEXT COLLATE "C" NOT NULL
                     REFERENCES objects_uploads(upload_id) ON DELETE CASCADE,
    number           BIGINT NOT NULL,
    sha256           TEXT NOT NULL,
    size             BIGINT NOT NULL,
    etag             TEXT NOT NULL,
    last_modified_ms BIGINT NOT NULL,
    checksum         TEXT,
    PRIMARY KEY (upload_id, number)
);
-- A bucket's notification configuration (JSON), removed with the bucket.
CREATE TABLE objects_notification_configs (
    bucket TEXT COLLATE "C" PRIMARY KEY REFERENCES objects_buckets(name) ON DELETE CASCADE,
    config TEXT NOT NULL
);
-- The outbox: notifications recorded with the writes that caused them, until delivered.
-- An identity: a sequence number is never reused, even after the newest rows are removed.
CREATE TABLE objects_notification_outbox (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bucket     TEXT NOT NULL,
    target     TEXT NOT NULL CHECK (target IN ('function', 'queue', 'eventbridge')),
    arn        TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
-- The last S3 event sequencer handed out (one row, id 0), shared by every node.
CREATE TABLE objects_notification_sequencer (
    id   INTEGER PRIMARY KEY CHECK (id = 0),
    last BIGINT NOT NULL
);
-- A bucket's CORS and lifecycle configurations (JSON), removed with the bucket.
CREATE TABLE objects_bucket_configs (
    bucket TEXT COLLATE "C" NOT NULL REFERENCES objects_buckets(name) ON DELETE CASCADE,
    kind   TEXT NOT NULL CHECK (kind IN ('cors', 'lifecycle')),
    config TEXT NOT NULL,
    PRIMARY KEY (bucket, kind)
);
-- A bucket's tags (PutBucketTagging; JSON object), removed with the bucket.
CREATE TABLE objects_bucket_tags (
    bucket TEXT COLLATE "C" PRIMARY KEY REFERENCES objects_buckets(name) ON DELETE CASCADE,
    tags   TEXT NOT NULL
);
"#,
)];
