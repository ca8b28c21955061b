//! InventoryService: reserves stock through an idempotent
//! [`InventoryLedger`], after any injected fault. The decision logic lives
//! here once; each architecture only decides how a reservation request
//! arrives (an HTTP call, a queue message, a Kafka record) and what happens
//! with the answer.
//!
//! [`InventoryService::release`] (`POST /release`, served by
//! [`ReleaseHandler`]) is the compensation Part A's OrderService sends for
//! an order that failed after inventory may have reserved it. Injected
//! faults apply to reservations only: a release is never delayed or failed
//! by `/configure`, so compensation is not held hostage by an experiment.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use campusfood_core::events::{
    ErrorBody, ReleaseReply, ReleaseRequest, ReleaseStatus, ReserveInsufficient, ReserveOk,
    ReserveRequest, ReservedStatus,
};
use campusfood_core::fault::FaultInjector;
use campusfood_core::ledger::{InventoryLedger, LedgerError, Release, ReserveOutcome};
use campusfood_core::order::Item;
use campusfood_core::transport::{Message, Reply, RequestHandler, headers};
use campusfood_core::{OrderId, RequestId, ReservationId};

use crate::reply::{decode_request, error_reply};

/// The answer to a reservation request, before it is put on a wire.
#[derive(Debug, Clone, PartialEq)]
pub enum ReserveResult {
    /// Reserved (200).
    Reserved(ReserveOk),
    /// Not enough stock (409).
    Insufficient(ReserveInsufficient),
    /// The item is not stocked (404).
    UnknownItem {
        /// The item asked for.
        item: Item,
        /// The request served.
        request_id: RequestId,
    },
    /// The order was released (410): it holds nothing and is not
    /// reserved again.
    Released {
        /// The order.
        order_id: OrderId,
        /// The request served.
        request_id: RequestId,
    },
    /// The order id was already used for another item or quantity (409,
    /// naming `order_id`): it names another order; nothing was taken.
    IdTaken {
        /// The order id.
        order_id: OrderId,
        /// The other order's item.
        item: Item,
        /// The other order's quantity.
        qty: campusfood_core::order::Quantity,
        /// The request served.
        request_id: RequestId,
    },
    /// An injected failure (500): nothing was decided.
    Injected {
        /// The request served.
        request_id: RequestId,
    },
    /// The ledger could not answer (500): nothing was decided.
    Unavailable {
        /// What failed.
        reason: String,
        /// The request served.
        request_id: RequestId,
    },
}

impl ReserveResult {
    /// The HTTP-style status of this answer.
    pub fn status(&self) -> u16 {
        match self {
            Self::Reserved(_) => 200,
            Self::Insufficient(_) => 409,
            Self::UnknownItem { .. } => 404,
            Self::Released { .. } => 410,
            Self::IdTaken { .. } => 409,
            Self::Injected { .. } => 500,
            // The ledger's store does not answer: ours, and temporary.
            Self::Unavailable { .. } => 503,
        }
    }

    /// The answer as a contract reply, with [`status`](Self::status).
    pub fn to_reply(&self) -> Reply {
        let status = self.status();
        let error = |error: String, field: Option<&str>, request_id: RequestId| ErrorBody {
            error,
            field: field.map(str::to_owned),
            request_id: Some(request_id),
        };
        let encoded = match self {
            Self::Reserved(ok) => Reply::json(status, ok),
            Self::Insufficient(body) => Reply::json(status, body),
            Self::UnknownItem { item, request_id } => Reply::json(
                status,
                &error(format!("unknown item {item}"), Some("item"), *request_id),
            ),
            Self::Released {
                order_id,
                request_id,
            } => Reply::json(
                410,
                &ErrorBody {
                    error: format!("order {order_id} was released; it is not reserved again"),
                    field: Some("order_id".to_owned()),
                    request_id: Some(*request_id),
                },
            ),
            Self::IdTaken {
                order_id,
                item,
                qty,
                request_id,
            } => Reply::json(
                status,
                &error(
                    format!(
                        "order id {order_id} was already used for {qty} x {item}: an order id names one order"
                    ),
                    Some("order_id"),
                    *request_id,
                ),
            ),
            Self::Injected { request_id } => Reply::json(
                status,
                &error("injected failure".to_owned(), None, *request_id),
            ),
            Self::Unavailable { reason, request_id } => {
                Reply::json(status, &error(reason.clone(), None, *request_id))
            }
        };
        encoded.unwrap_or_else(|e| error_reply(500, &e.to_string()))
    }
}

/// The inventory service. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct InventoryService {
    ledger: Arc<dyn InventoryLedger>,
    faults: Arc<FaultInjector>,
}

impl InventoryService {
    /// A service deciding through `ledger`, with faults from `faults`.
    pub fn new(ledger: Arc<dyn InventoryLedger>, faults: Arc<FaultInjector>) -> Self {
        Self { ledger, faults }
    }

    /// The runtime fault setting (for `/configure`).
    pub fn faults(&self) -> &Arc<FaultInjector> {
        &self.faults
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<dyn InventoryLedger> {
        &self.ledger
    }

    /// Current stock levels.
    pub async fn stock(&self) -> Result<BTreeMap<Item, u64>, LedgerError> {
        self.ledger.stock().await
    }

    /// Reserves for `req`: waits any injected delay, may fail by injection
    /// (drawn per order id and `attempt`), then decides through the ledger.
    /// Idempotent: the same order id again gets the first decision.
    #[tracing::instrument(name = "reserve", skip_all, fields(order_id = %req.order_id, request_id = %req.request_id))]
    pub async fn reserve(&self, req: &ReserveRequest, attempt: u32) -> ReserveResult {
        let request_id = req.request_id;
        if self
            .faults
            .apply(req.order_id.as_str(), attempt)
            .await
            .is_err()
        {
            tracing::info!("injected failure");
            return ReserveResult::Injected { request_id };
        }
        let reservation = match self.ledger.reserve(&req.order_id, &req.item, req.qty).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "ledger failed");
                return ReserveResult::Unavailable {
                    reason: e.to_string(),
                    request_id,
                };
            }
        };
        let record = reservation.record();
        if reservation.is_other_order(&req.item, req.qty) {
            tracing::warn!(used_for = %format!("{} x {}", record.qty, record.item), "order id already used for another order: refused");
            return ReserveResult::IdTaken {
                order_id: record.order_id.clone(),
                item: record.item.clone(),
                qty: record.qty,
                request_id,
            };
        }
        if reservation.is_repeat() {
            tracing::info!("repeated reservation: answering the first decision");
        }
        match record.outcome {
            ReserveOutcome::Reserved { remaining } => ReserveResult::Reserved(ReserveOk {
                status: ReservedStatus::Reserved,
                reservation_id: ReservationId::for_order(&record.order_id),
                item: record.item.clone(),
                qty: record.qty,
                remaining,
                request_id,
            }),
            ReserveOutcome::Insufficient { available } => {
                ReserveResult::Insufficient(ReserveInsufficient {
                    error: format!(
                        "insufficient stock of {}: {} asked, {available} available",
                        record.item, record.qty
                    ),
                    item: record.item.clone(),
                    available,
                    request_id,
                })
            }
            ReserveOutcome::UnknownItem => ReserveResult::UnknownItem {
                item: record.item.clone(),
                request_id,
            },
            ReserveOutcome::Released => ReserveResult::Released {
                order_id: record.order_id.clone(),
                request_id,
            },
        }
    }

    /// Releases `req.order_id` through the ledger: gives back what it
    /// holds, once, and makes sure it is never reserved. Safe to repeat.
    #[tracing::instrument(name = "release", skip_all, fields(order_id = %req.order_id))]
    pub async fn release(&self, req: &ReleaseRequest) -> Result<ReleaseReply, LedgerError> {
        let release = self.ledger.release(&req.order_id).await?;
        let mut reply = ReleaseReply {
            status: ReleaseStatus::NothingHeld,
            order_id: req.order_id.clone(),
            item: None,
            qty: None,
            remaining: None,
            request_id: req.request_id,
        };
        match release {
            Release::Returned { item, qty, level } => {
                tracing::info!(%item, qty = qty.get(), level, "reservation released: stock given back");
                reply.status = ReleaseStatus::Released;
                (reply.item, reply.qty, reply.remaining) = (Some(item), Some(qty), Some(level));
            }
            Release::NothingHeld => {
                tracing::info!("released an order that held nothing; it will not be reserved");
            }
            Release::AlreadyReleased => reply.status = ReleaseStatus::AlreadyReleased,
        }
        Ok(reply)
    }
}

/// Serves `POST /release` (or [`Route::RELEASE`](campusfood_core::transport::Route::RELEASE)):
/// 200 with a [`ReleaseReply`] whatever the release did, 503 when the
/// ledger does not answer.
#[derive(Debug, Clone)]
pub struct ReleaseHandler(pub Arc<InventoryService>);

#[async_trait]
impl RequestHandler for ReleaseHandler {
    async fn call(&self, request: Message) -> Reply {
        let req: ReleaseRequest = match decode_request(&request.body) {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        let encoded = match self.0.release(&req).await {
            Ok(reply) => Reply::json(200, &reply),
            Err(e) => {
                tracing::error!(error = %e, "ledger failed");
                Reply::json(
                    503,
                    &ErrorBody {
                        error: e.to_string(),
                        field: None,
                        request_id: req.request_id,
                    },
                )
            }
        };
        encoded.unwrap_or_else(|e| error_reply(500, &e.to_string()))
    }
}

/// Serves `POST /reserve` (or [`Route::RESERVE`](campusfood_core::transport::Route::RESERVE)
/// on any request/reply transport). The attempt number comes from the
/// `x-attempts` header (1 when absent).
#[async_trait]
impl RequestHandler for InventoryService {
    async fn call(&self, request: Message) -> Reply {
        let req: ReserveRequest = match decode_request(&request.body) {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        let attempt = request
            .headers
            .get(headers::ATTEMPTS)
            .and_then(|a| a.parse().ok())
            .unwrap_or(1);
        self.reserve(&req, attempt).await.to_reply()
    }
}
