-- The orders-pipeline tables: psql -h 127.0.0.1 -U postgres -d orders -f schema.sql

-- Written by `store`, once per order id (a redelivered order changes nothing).
CREATE TABLE IF NOT EXISTS orders (
    id          text PRIMARY KEY,
    customer    text NOT NULL,
    total       numeric(12, 2) NOT NULL,
    items       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS orders_customer ON orders (customer);

-- Kept by `summary` from the change stream of orders: recomputed from orders for the
-- customers of each batch of inserts.
CREATE TABLE IF NOT EXISTS customer_summary (
    customer    text PRIMARY KEY,
    orders      integer NOT NULL,
    revenue     numeric(14, 2) NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
