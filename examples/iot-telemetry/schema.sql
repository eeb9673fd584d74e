-- examples/iot-telemetry: apply with
--   createdb -h 127.0.0.1 -U postgres iot
--   psql -h 127.0.0.1 -U postgres -d iot -f schema.sql

-- Every reading once: (device, seq) is the device's own message number, so a message the
-- broker delivers twice (MQTT QoS 1 is at least once) is stored, and counted, once.
CREATE TABLE IF NOT EXISTS readings (
    device text             NOT NULL,
    seq    bigint           NOT NULL,
    ts     timestamptz      NOT NULL,
    temp   double precision NOT NULL,
    PRIMARY KEY (device, seq)
);

-- Per device and minute (of the reading's own timestamp, not of its arrival).
CREATE TABLE IF NOT EXISTS readings_minute (
    device text             NOT NULL,
    minute timestamptz      NOT NULL,
    n      bigint           NOT NULL,
    sum    double precision NOT NULL,
    min    double precision NOT NULL,
    max    double precision NOT NULL,
    PRIMARY KEY (device, minute)
);

-- At most one alert per device, minute and reason; an INSERT here invokes `notify`
-- (logical decoding: the server needs wal_level = logical).
CREATE TABLE IF NOT EXISTS alerts (
    id          bigserial        PRIMARY KEY,
    device      text             NOT NULL,
    minute      timestamptz      NOT NULL,
    temp        double precision NOT NULL,
    reason      text             NOT NULL,
    created_at  timestamptz      NOT NULL DEFAULT now(),
    notified_at timestamptz,
    UNIQUE (device, minute, reason)
);
