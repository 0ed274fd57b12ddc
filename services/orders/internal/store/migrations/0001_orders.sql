-- An order and the idempotency key that placed it. The unique key makes a retried or concurrent
-- placement with the same key find this row instead of placing another; the fingerprint (SHA-256 of
-- the items and card token asked for) tells a true retry from a key reused for something else.
--
-- status 'pending': recorded, its charge not confirmed yet. Whoever holds the lease (lease_until in
-- the future) is charging it; once the lease passes, a retry with the same key resumes it, charging
-- payments with the key derived from the order id, which payments deduplicates. 'paid': charged once,
-- charge_id set.
CREATE TABLE orders (
    id                  text        PRIMARY KEY,
    idempotency_key     text        NOT NULL UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_fingerprint text        NOT NULL,
    status              text        NOT NULL CHECK (status IN ('pending', 'paid')),
    currency            text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total_cents         bigint      NOT NULL CHECK (total_cents > 0),
    charge_id           text,
    lease_until         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    paid_at             timestamptz,
    CHECK ((status = 'paid') = (charge_id IS NOT NULL AND paid_at IS NOT NULL))
);

-- Unfinished orders, for operators and for the count in `make drill`.
CREATE INDEX orders_pending ON orders (created_at) WHERE status = 'pending';

CREATE TABLE order_items (
    order_id         text   NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    position         int    NOT NULL CHECK (position >= 0),
    product_id       text   NOT NULL,
    quantity         int    NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, position)
);
