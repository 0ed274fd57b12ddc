-- The processing record: one row per OrderPlaced event fulfillment has acted on, keyed by the event id
-- (the outbox row's id, the message's Nats-Msg-Id). The shipment an event creates is inserted in the
-- same transaction, so an event redelivered — after a crash before its ack, an ack lost on the way, or
-- a copy published again by orders' relay outside JetStream's duplicate window — finds its row and
-- changes nothing.
CREATE TABLE processed_events (
    event_id        text        PRIMARY KEY,
    subject         text        NOT NULL,
    -- stream_sequence and deliveries are the message's JetStream metadata when it was processed.
    stream_sequence bigint      NOT NULL,
    deliveries      int         NOT NULL CHECK (deliveries >= 1),
    processed_at    timestamptz NOT NULL DEFAULT now()
);

-- A shipment per order: the effect of an OrderPlaced event. order_id is unique, so even two distinct
-- events about one order make one shipment.
CREATE TABLE shipments (
    id              text        PRIMARY KEY,
    order_id        text        NOT NULL UNIQUE,
    event_id        text        NOT NULL REFERENCES processed_events (event_id),
    status          text        NOT NULL CHECK (status IN ('preparing')),
    items           jsonb       NOT NULL,
    total_cents     bigint      NOT NULL CHECK (total_cents > 0),
    currency        text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    trace_id        text        NOT NULL DEFAULT '',
    order_placed_at timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
