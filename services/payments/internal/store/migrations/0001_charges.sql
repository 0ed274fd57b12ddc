-- A charge, made once per idempotency key: the unique key is what makes a retried or concurrent
-- Charge with the same key read the first one's charge instead of making another.
CREATE TABLE charges (
    id              text        PRIMARY KEY,
    idempotency_key text        NOT NULL UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    amount_cents    bigint      NOT NULL CHECK (amount_cents > 0),
    currency        text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    reference       text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now()
);
