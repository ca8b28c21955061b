-- 0002: releasing a reservation, Part A's compensation for an order whose
-- client saw it fail (a timeout after inventory had committed). A release
-- gives the stock back once and marks the order 'released'; a released
-- order is never reserved. A release that comes before the reservation
-- leaves a row without item and qty (reservations' own primary key
-- orders the two): the reservation, when it comes, fills them in and
-- takes nothing.
ALTER TABLE reservations
    ALTER COLUMN item DROP NOT NULL,
    ALTER COLUMN qty DROP NOT NULL,
    ADD COLUMN released_at timestamptz;

-- As in 0001, and: an order released before it was decided gets its first
-- decision here, 'released', without touching the stock.
CREATE OR REPLACE FUNCTION reserve(
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
        UPDATE reservations r SET item = p_item, qty = p_qty
         WHERE r.ledger = p_ledger AND r.order_id = p_order AND r.item IS NULL
        RETURNING true, r.item, r.qty, r.outcome, r.amount
             INTO o_first, o_item, o_qty, o_outcome, o_amount;
        IF FOUND THEN
            RETURN;
        END IF;
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

-- Releases p_order: o_result is 'returned' (o_qty of o_item went back,
-- leaving o_level), 'nothing_held' (refused, or not decided yet: a row
-- without item holds its place) or 'already_released'. The claim on the
-- order's key comes first, as in reserve, so a release and a reservation
-- of one order are decided one after the other in any instance.
CREATE FUNCTION release(
    p_ledger text, p_order text,
    OUT o_result text, OUT o_item text, OUT o_qty bigint, OUT o_level bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_outcome text;
BEGIN
    INSERT INTO reservations (ledger, order_id, outcome, released_at)
    VALUES (p_ledger, p_order, 'released', now())
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        o_result := 'nothing_held';
        RETURN;
    END IF;
    SELECT r.item, r.qty, r.outcome INTO o_item, o_qty, v_outcome
      FROM reservations r
     WHERE r.ledger = p_ledger AND r.order_id = p_order
       FOR UPDATE;
    IF v_outcome = 'released' THEN
        o_result := 'already_released';
        o_item := NULL;
        o_qty := NULL;
        RETURN;
    END IF;
    UPDATE reservations r SET outcome = 'released', amount = NULL, released_at = now()
     WHERE r.ledger = p_ledger AND r.order_id = p_order;
    IF v_outcome = 'reserved' THEN
        UPDATE stock s SET level = s.level + o_qty
         WHERE s.ledger = p_ledger AND s.item = o_item
        RETURNING s.level INTO o_level;
        o_result := 'returned';
    ELSE
        o_result := 'nothing_held';
        o_item := NULL;
        o_qty := NULL;
    END IF;
END;
$$;
