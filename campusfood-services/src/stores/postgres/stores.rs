//! The async OrderService's orders and outbox ([`PgOrderStore`]), Part A's
//! kept notifications ([`PgOutbox`]) and processed-id sets
//! ([`PgProcessedIds`]) in Postgres.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use campusfood_core::OrderId;
use campusfood_core::order::{Order, OrderStatus};
use campusfood_core::outbox::{Outbox, OutboxEntry, OutboxError};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{Postgres, describe};
use crate::stores::ProcessedIds;
use crate::stores::orders::rank;
use crate::stores::{OrderStore, Placed, StoreError};
use crate::timeline::Hop;

/// How long an outbox entry handed to one relay (or retrier) is hidden
/// from the others. A relay that dies with entries in hand delays them by
/// at most this much; one slower than this may publish an entry that
/// another relay publishes too — consumers are idempotent.
pub const OUTBOX_LEASE: Duration = Duration::from_secs(10);

/// A store's name and pool, and the statements every store runs.
#[derive(Clone)]
struct Named {
    pg: Postgres,
    name: Arc<str>,
    lease: Duration,
}

impl fmt::Debug for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Named")
            .field("name", &self.name)
            .field("lease", &self.lease)
            .field("pg", &self.pg)
            .finish()
    }
}

impl Named {
    fn new(pg: &Postgres, name: &str) -> Self {
        Self {
            pg: pg.clone(),
            name: name.into(),
            lease: OUTBOX_LEASE,
        }
    }

    /// Runs `sql` with `$1` = the store's name and `rest` after it.
    async fn query(&self, sql: &str, rest: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, String> {
        let client = self.pg.pool().get().await.map_err(|e| e.to_string())?;
        let stmt = client.prepare_cached(sql).await.map_err(|e| describe(&e))?;
        let name: &str = &self.name;
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(rest.len() + 1);
        params.push(&name);
        params.extend_from_slice(rest);
        client.query(&stmt, &params).await.map_err(|e| describe(&e))
    }

    async fn count(&self, sql: &str) -> Result<u64, String> {
        let rows = self.query(sql, &[]).await?;
        let n: i64 = rows.first().map_or(0, |r| r.get(0));
        u64::try_from(n).map_err(|e| e.to_string())
    }

    /// Takes up to `limit` unleased entries, leasing them for `self.lease`,
    /// ordered by `order` (`seq` or `id`).
    async fn lease(&self, limit: usize, order: &str) -> Result<Vec<OutboxEntry>, String> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let lease = self.lease.as_secs_f64();
        let sql = format!(
            "UPDATE outbox o SET lease_until = now() + make_interval(secs => $3)
               FROM (SELECT id FROM outbox
                      WHERE store = $1 AND (lease_until IS NULL OR lease_until < now())
                      ORDER BY {order} LIMIT $2
                      FOR UPDATE SKIP LOCKED) taken
              WHERE o.store = $1 AND o.id = taken.id
          RETURNING o.{order}, o.entry"
        );
        let mut rows = self.query(&sql, &[&limit, &lease]).await?;
        if order == "seq" {
            rows.sort_by_key(|r| r.get::<_, i64>(0));
        } else {
            rows.sort_by(|a, b| a.get::<_, &str>(0).cmp(b.get::<_, &str>(0)));
        }
        rows.iter()
            .map(|r| serde_json::from_str(r.get(1)).map_err(|e| format!("outbox entry: {e}")))
            .collect()
    }
}

fn status_text(status: OrderStatus) -> Result<String, String> {
    match serde_json::to_value(status) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        other => Err(format!("order status {status:?} as text: {other:?}")),
    }
}

fn order_from(body: &str, status: &str) -> Result<Order, String> {
    let mut order: Order =
        serde_json::from_str(body).map_err(|e| format!("stored order is unreadable: {e}"))?;
    order.status = serde_json::from_value(serde_json::Value::String(status.to_owned()))
        .map_err(|e| format!("stored status {status:?}: {e}"))?;
    Ok(order)
}

/// The async OrderService's orders and outbox in Postgres, shared by every
/// order-service instance: any of them answers for every order; their
/// relays share the outbox through leases; status events may be applied by
/// any instance (status only moves forward).
#[derive(Debug, Clone)]
pub struct PgOrderStore(Named);

impl PgOrderStore {
    /// The order store `name` (tables created by the migrations), its
    /// outbox entries leased for [`OUTBOX_LEASE`].
    pub fn new(pg: &Postgres, name: &str) -> Self {
        Self(Named::new(pg, name))
    }

    /// The same store, with outbox entries leased for `lease`.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.0.lease = lease;
        self
    }
}

#[async_trait]
impl OrderStore for PgOrderStore {
    async fn place(&self, order: &Order, event: OutboxEntry) -> Result<Placed, StoreError> {
        let body = serde_json::to_string(order).map_err(|e| StoreError(e.to_string()))?;
        let entry = serde_json::to_string(&event).map_err(|e| StoreError(e.to_string()))?;
        let status = status_text(order.status).map_err(StoreError)?;
        let rank = i16::from(rank(order.status));
        let (id, event_id) = (order.order_id.as_str(), event.id.as_str());
        // One statement: the order and its event commit together, and
        // neither when the id is stored already (never overwritten).
        let rows = self
            .0
            .query(
                "WITH placed AS (
                     INSERT INTO orders (store, order_id, body, status, rank)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT DO NOTHING
                     RETURNING 1
                 )
                 INSERT INTO outbox (store, id, entry) SELECT $1, $6, $7 FROM placed
                 RETURNING 1",
                &[&id, &body, &status, &rank, &event_id, &entry],
            )
            .await
            .map_err(StoreError)?;
        Ok(if rows.is_empty() {
            Placed::IdTaken
        } else {
            Placed::Stored
        })
    }

    async fn get(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let id = id.as_str();
        let rows = self
            .0
            .query(
                "SELECT body, status FROM orders WHERE store = $1 AND order_id = $2",
                &[&id],
            )
            .await
            .map_err(StoreError)?;
        rows.first()
            .map(|r| order_from(r.get(0), r.get(1)))
            .transpose()
            .map_err(StoreError)
    }

    async fn advance(
        &self,
        id: &OrderId,
        status: OrderStatus,
        hop: &Hop,
    ) -> Result<Option<Order>, StoreError> {
        let text = status_text(status).map_err(StoreError)?;
        let rank = i16::from(rank(status));
        let id = id.as_str();
        let hop = serde_json::to_string(&[hop]).map_err(|e| StoreError(e.to_string()))?;
        // One statement: forward only, the hop appended either way unless
        // it is there already (the same event again).
        let rows = self
            .0
            .query(
                "UPDATE orders
                    SET status = CASE WHEN rank < $4 THEN $3 ELSE status END,
                        rank = GREATEST(rank, $4),
                        hops = CASE WHEN hops @> $5::text::jsonb THEN hops
                                    ELSE hops || $5::text::jsonb END
                  WHERE store = $1 AND order_id = $2
              RETURNING body, status",
                &[&id, &text, &rank, &hop],
            )
            .await
            .map_err(StoreError)?;
        rows.first()
            .map(|r| order_from(r.get(0), r.get(1)))
            .transpose()
            .map_err(StoreError)
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.0.lease(limit, "seq").await.map_err(StoreError)
    }

    async fn published(&self, ids: Vec<String>, hop: &Hop) -> Result<(), StoreError> {
        // Only the relay whose delete removed an entry records the hop.
        let hop = serde_json::to_string(&[hop]).map_err(|e| StoreError(e.to_string()))?;
        self.0
            .query(
                "WITH gone AS (
                     DELETE FROM outbox WHERE store = $1 AND id = ANY($2) RETURNING id
                 )
                 UPDATE orders SET hops = hops || $3::text::jsonb
                  WHERE store = $1 AND order_id IN (SELECT id FROM gone)",
                &[&ids, &hop],
            )
            .await
            .map_err(StoreError)?;
        Ok(())
    }

    async fn timeline(&self, id: &OrderId) -> Result<Option<(Order, Vec<Hop>)>, StoreError> {
        let id = id.as_str();
        let rows = self
            .0
            .query(
                "SELECT body, status, hops::text FROM orders WHERE store = $1 AND order_id = $2",
                &[&id],
            )
            .await
            .map_err(StoreError)?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let order = order_from(row.get(0), row.get(1)).map_err(StoreError)?;
        let hops: String = row.get(2);
        let hops = serde_json::from_str(&hops)
            .map_err(|e| StoreError(format!("order {id}'s timeline is unreadable: {e}")))?;
        Ok(Some((order, hops)))
    }

    async fn outbox_len(&self) -> Result<u64, StoreError> {
        self.0
            .count("SELECT count(*) FROM outbox WHERE store = $1")
            .await
            .map_err(StoreError)
    }

    async fn order_count(&self) -> Result<u64, StoreError> {
        self.0
            .count("SELECT count(*) FROM orders WHERE store = $1")
            .await
            .map_err(StoreError)
    }
}

/// Kept messages in Postgres (Part A's notifications to resend), shared by
/// every order-service instance; [`Outbox::pending`] leases what it returns
/// for [`OUTBOX_LEASE`], so two instances do not resend one entry at once.
#[derive(Debug, Clone)]
pub struct PgOutbox(Named);

impl PgOutbox {
    /// The outbox `name`, its entries leased for [`OUTBOX_LEASE`].
    pub fn new(pg: &Postgres, name: &str) -> Self {
        Self(Named::new(pg, name))
    }

    /// The same outbox, with entries leased for `lease`.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.0.lease = lease;
        self
    }
}

#[async_trait]
impl Outbox for PgOutbox {
    async fn put(&self, entry: OutboxEntry) -> Result<(), OutboxError> {
        let json = serde_json::to_string(&entry).map_err(|e| OutboxError(e.to_string()))?;
        let id = entry.id.as_str();
        self.0
            .query(
                "INSERT INTO outbox (store, id, entry) VALUES ($1, $2, $3)
                 ON CONFLICT (store, id) DO UPDATE SET entry = excluded.entry, lease_until = NULL",
                &[&id, &json],
            )
            .await
            .map_err(OutboxError)?;
        Ok(())
    }

    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        self.0.lease(limit, "id").await.map_err(OutboxError)
    }

    async fn remove(&self, id: &str) -> Result<(), OutboxError> {
        self.0
            .query("DELETE FROM outbox WHERE store = $1 AND id = $2", &[&id])
            .await
            .map_err(OutboxError)?;
        Ok(())
    }

    async fn len(&self) -> Result<u64, OutboxError> {
        self.0
            .count("SELECT count(*) FROM outbox WHERE store = $1")
            .await
            .map_err(OutboxError)
    }
}

/// A processed-id set in Postgres, shared by every instance.
#[derive(Debug, Clone)]
pub struct PgProcessedIds(Named);

impl PgProcessedIds {
    /// The set `name`.
    pub fn new(pg: &Postgres, name: &str) -> Self {
        Self(Named::new(pg, name))
    }
}

#[async_trait]
impl ProcessedIds for PgProcessedIds {
    async fn contains(&self, id: &str) -> Result<bool, StoreError> {
        let rows = self
            .0
            .query(
                "SELECT 1 FROM processed WHERE store = $1 AND id = $2",
                &[&id],
            )
            .await
            .map_err(StoreError)?;
        Ok(!rows.is_empty())
    }

    async fn record(&self, id: &str) -> Result<bool, StoreError> {
        let rows = self
            .0
            .query(
                "INSERT INTO processed (store, id) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING RETURNING 1",
                &[&id],
            )
            .await
            .map_err(StoreError)?;
        Ok(!rows.is_empty())
    }

    async fn len(&self) -> Result<u64, StoreError> {
        self.0
            .count("SELECT count(*) FROM processed WHERE store = $1")
            .await
            .map_err(StoreError)
    }
}
