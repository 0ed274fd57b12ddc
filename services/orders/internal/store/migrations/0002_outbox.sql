-- The transactional outbox: an event orders publishes is first a row here, inserted by the transaction
-- that marks its order paid, so it exists if and only if that transaction committed (no dual write: a
-- crash, a declined card or a rollback leaves neither the paid order nor its event). The relay
-- (internal/outbox) publishes pending rows to NATS JetStream and sets sent_at.
--
-- Several replicas relay at once without publishing a row twice in effect: each locks the rows it
-- publishes with SELECT ... FOR UPDATE SKIP LOCKED, so the others skip them, and marks them sent in the
-- same transaction. A relay that dies after publishing and before committing leaves its rows pending
-- (its lock ends with its session) and another publishes them again with the same id: JetStream drops
-- the copy within its duplicate window (Nats-Msg-Id = id), and the consumer's processing record drops
-- it after.
CREATE TABLE outbox (
    -- id is the event id: Nats-Msg-Id and OrderPlaced.event_id. Random, not a sequence, so a restored
    -- or rebuilt database never reuses an id a consumer has already seen.
    id          text        PRIMARY KEY,
    -- seq orders the relay's batches: oldest first.
    seq         bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    subject     text        NOT NULL,
    event_type  text        NOT NULL,
    payload     bytea       NOT NULL,
    trace_id    text        NOT NULL DEFAULT '',
    order_id    text        NOT NULL REFERENCES orders (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    -- attempts and last_error record failed publishes, for an operator reading a stuck backlog.
    attempts    int         NOT NULL DEFAULT 0,
    last_error  text
);

-- The backlog: what the relay reads, and what meshplane_outbox_pending counts.
CREATE INDEX outbox_pending ON outbox (seq) WHERE sent_at IS NULL;
-- Sent rows are pruned after OUTBOX_RETENTION.
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
