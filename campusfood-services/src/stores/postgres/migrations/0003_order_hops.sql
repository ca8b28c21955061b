-- 0003: each order's timeline (`GET /orders/{id}/timeline`): its hops as a
-- JSON array, appended in the statement that moves its status or removes
-- its published event, so a hop costs no write of its own.
ALTER TABLE orders ADD COLUMN hops jsonb NOT NULL DEFAULT '[]'::jsonb;
