-- 0001: every store a campusfood service keeps, for any number of
-- instances sharing one database. Each table is namespaced by `store`
-- (or `ledger`): Parts A, B and C keep separate ledgers and outboxes.

-- The inventory ledgers: stock levels, never negative.
CREATE TABLE ledgers (
    ledger     text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE stock (
    ledger text   NOT NULL REFERENCES ledgers (ledger),
    item   text   NOT NULL,
    level  bigint NOT NULL CHECK (level >= 0),
    PRIMARY KEY (ledger, item)
);

-- One decision per order and ledger: the primary key makes reserving
-- idempotent across every instance.
CREATE TABLE reservations (
    ledger     text   NOT NULL,
    order_id   text   NOT NULL,
    item       text   NOT NULL,
    qty        bigint NOT NULL,
    -- reserved | insufficient | unknown_item
    outcome    text   NOT NULL,
    -- reserved: the level left right after; insufficient: the level seen.
    amount     bigint,
    decided_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ledger, order_id)
);

-- Reserves p_qty of p_item for p_order, atomically and idempotently.
-- The claim comes first: a second call for the same order (in this
-- transaction, or in another that committed first) finds it and returns
-- the first decision with o_first = false; a concurrent one waits on the
-- key until the first commits. The stock update's WHERE is re-checked
-- against the latest committed level, so concurrent callers never take
-- more than there is.
CREATE FUNCTION reserve(
    p_ledger text, p_order text, p_item text, p_qty bigint,
    OUT o_first boolean, OUT o_item text, OUT o_qty bigint,
    OUT o_outcome text, OUT o_amount bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    INSERT INTO reservations (ledger, order_id, item, qty, outcome)
    VALUES (p_ledger, p_order, p_item, p_qty, 'pending')
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT false, r.item, r.qty, r.outcome, r.amount
          INTO o_first, o_item, o_qty, o_outcome, o_amount
          FROM reservations r
         WHERE r.ledger = p_ledger AND r.order_id = p_order;
        RETURN;
    END IF;
    o_first := true;
    o_item := p_item;
    o_qty := p_qty;
    UPDATE stock s SET level = s.level - p_qty
     WHERE s.ledger = p_ledger AND s.item = p_item AND s.level >= p_qty
    RETURNING s.level INTO o_amount;
    IF FOUND THEN
        o_outcome := 'reserved';
    ELSE
        SELECT s.level INTO o_amount FROM stock s
         WHERE s.ledger = p_ledger AND s.item = p_item;
        IF FOUND THEN
            o_outcome := 'insufficient';
        ELSE
            o_outcome := 'unknown_item';
            o_amount := NULL;
        END IF;
    END IF;
    UPDATE reservations r SET outcome = o_outcome, amount = o_amount
     WHERE r.ledger = p_ledger AND r.order_id = p_order;
END;
$$;

-- The asynchronous OrderService's orders; `rank` orders the statuses
-- (placed 0; confirmed, reserved, failed 1; notified 2) so that status
-- only moves forward whichever instance applies an event.
CREATE TABLE orders (
    store    text     NOT NULL,
    order_id text     NOT NULL,
    body     text     NOT NULL,
    status   text     NOT NULL,
    rank     smallint NOT NULL,
    PRIMARY KEY (store, order_id)
);

-- Outboxes: the async OrderService's events to publish, Part A's
-- notifications to resend. `lease_until` hands an entry to one relay at a
-- time; a relay that dies lets its lease run out and another takes over.
CREATE TABLE outbox (
    store       text      NOT NULL,
    id          text      NOT NULL,
    seq         bigserial NOT NULL,
    entry       text      NOT NULL,
    lease_until timestamptz,
    PRIMARY KEY (store, id)
);
CREATE INDEX outbox_by_seq ON outbox (store, seq);

-- Processed-id sets (orders already notified, …).
CREATE TABLE processed (
    store text NOT NULL,
    id    text NOT NULL,
    at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store, id)
);
