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
use campusfood_core::codec;
use campusfood_core::events::{
    ErrorBody, ReleaseReply, ReleaseRequest, ReleaseStatus, ReserveInsufficient, ReserveOk,
    ReserveRequest,
};
use campusfood_core::fault::FaultInjector;
use campusfood_core::ledger::{InventoryLedger, LedgerError, Release, ReserveOutcome};
use campusfood_core::metric;
use campusfood_core::order::{Item, Quantity};
use campusfood_core::transport::{Message, Reply, RequestHandler, headers};
use campusfood_core::{OrderId, RequestId};

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
        qty: Quantity,
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
                    id_taken_error(order_id, item, *qty),
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

    /// Reads inventory's reply to `request` back into the answer it
    /// carries: the inverse of [`to_reply`](Self::to_reply), by the
    /// contract's statuses and bodies. What a body does not carry is
    /// `request`'s (the unknown item, the released order).
    ///
    /// # Errors
    /// [`UnreadableReply`] when the body is not what its status promises,
    /// or the status is none a reservation answers.
    pub fn from_reply(
        request: &ReserveRequest,
        status: u16,
        body: &[u8],
    ) -> Result<Self, UnreadableReply> {
        let unreadable = |reason: String| UnreadableReply::Body { status, reason };
        if status == 200 {
            return codec::decode(body)
                .map(Self::Reserved)
                .map_err(|e| unreadable(e.to_string()));
        }
        let error: Option<ErrorBody> = codec::decode(body).ok();
        let request_id = error
            .as_ref()
            .and_then(|e| e.request_id)
            .unwrap_or(request.request_id);
        match status {
            409 if error.as_ref().and_then(|e| e.field.as_deref()) == Some("order_id") => {
                let reason = error.map(|e| e.error).unwrap_or_default();
                let (qty, item) = read_id_taken_error(&request.order_id, &reason)
                    .ok_or_else(|| unreadable(reason.clone()))?;
                Ok(Self::IdTaken {
                    order_id: request.order_id.clone(),
                    item,
                    qty,
                    request_id,
                })
            }
            409 => codec::decode(body)
                .map(Self::Insufficient)
                .map_err(|e| unreadable(e.to_string())),
            404 => Ok(Self::UnknownItem {
                item: request.item.clone(),
                request_id,
            }),
            410 => Ok(Self::Released {
                order_id: request.order_id.clone(),
                request_id,
            }),
            500 => Ok(Self::Injected { request_id }),
            s if s >= 500 => Ok(Self::Unavailable {
                reason: error.map_or_else(|| format!("inventory answered {s}"), |e| e.error),
                request_id,
            }),
            s => Err(UnreadableReply::Status(s)),
        }
    }
}

/// Inventory's reply to a reservation could not be read as an answer
/// ([`ReserveResult::from_reply`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnreadableReply {
    /// The body is not what the status promises.
    #[error("inventory answered {status} with an unreadable body: {reason}")]
    Body {
        /// The status answered.
        status: u16,
        /// What could not be read.
        reason: String,
    },
    /// No reservation answer has this status.
    #[error("inventory answered {0}, which no reservation answer has")]
    Status(u16),
}

/// Why an order id was refused: it names another order, of `qty` x `item`.
fn id_taken_error(order_id: &OrderId, item: &Item, qty: Quantity) -> String {
    format!("order id {order_id} was already used for {qty} x {item}: an order id names one order")
}

/// The other order's quantity and item, read back from
/// [`id_taken_error`]'s text.
fn read_id_taken_error(order_id: &OrderId, error: &str) -> Option<(Quantity, Item)> {
    let used_for = error
        .strip_prefix(&format!("order id {order_id} was already used for "))?
        .strip_suffix(": an order id names one order")?;
    let (qty, item) = used_for.split_once(" x ")?;
    Some((
        Quantity::new(qty.parse().ok()?).ok()?,
        Item::parse(item).ok()?,
    ))
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
        metric::register_order_outcomes();
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
    /// Counts [`metric::ORDER_OUTCOMES`]: a ledger decision once per order
    /// (not its repeats), an injected failure each time.
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
            metric::order_outcome(metric::outcome::INJECTED_FAILURE);
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
        let first = !reservation.is_repeat();
        if !first {
            tracing::info!("repeated reservation: answering the first decision");
        }
        let counted = match record.outcome {
            ReserveOutcome::Reserved { .. } => Some(metric::outcome::RESERVED),
            ReserveOutcome::Insufficient { .. } => Some(metric::outcome::INSUFFICIENT_STOCK),
            ReserveOutcome::UnknownItem => Some(metric::outcome::ITEM_NOT_FOUND),
            ReserveOutcome::Released => None,
        };
        if let Some(outcome) = counted.filter(|_| first) {
            metric::order_outcome(outcome);
        }
        match record.outcome {
            // Not another order's record (refused above): the record is
            // `req`'s.
            ReserveOutcome::Reserved { remaining } => {
                ReserveResult::Reserved(ReserveOk::new(req, remaining))
            }
            ReserveOutcome::Insufficient { available } => {
                ReserveResult::Insufficient(ReserveInsufficient::new(req, available))
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

#[cfg(test)]
mod tests {
    use campusfood_core::order::{Order, OrderStatus, PlaceOrder};

    use super::*;

    fn request() -> ReserveRequest {
        let burger = PlaceOrder::from_json(br#"{"item": "burger", "qty": 2}"#).unwrap();
        ReserveRequest::for_order(&Order::new(burger, OrderStatus::Confirmed))
    }

    #[test]
    fn every_answer_reads_back_from_its_reply() {
        let req = request();
        let request_id = req.request_id;
        let answers = [
            ReserveResult::Reserved(ReserveOk::new(&req, 8)),
            ReserveResult::Insufficient(ReserveInsufficient::new(&req, 1)),
            ReserveResult::UnknownItem {
                item: req.item.clone(),
                request_id,
            },
            ReserveResult::Released {
                order_id: req.order_id.clone(),
                request_id,
            },
            ReserveResult::IdTaken {
                order_id: req.order_id.clone(),
                item: Item::parse("fries").unwrap(),
                qty: Quantity::new(3).unwrap(),
                request_id,
            },
            ReserveResult::Injected { request_id },
            ReserveResult::Unavailable {
                reason: "the ledger's disk is full".to_owned(),
                request_id,
            },
        ];
        for answer in answers {
            let reply = answer.to_reply();
            assert_eq!(
                ReserveResult::from_reply(&req, reply.status, &reply.body),
                Ok(answer)
            );
        }
    }

    #[test]
    fn a_reply_that_is_no_answer_is_unreadable() {
        let req = request();
        assert!(matches!(
            ReserveResult::from_reply(&req, 200, br#"{"status": "reserved"}"#),
            Err(UnreadableReply::Body { status: 200, .. })
        ));
        assert!(matches!(
            ReserveResult::from_reply(&req, 409, b"{}"),
            Err(UnreadableReply::Body { status: 409, .. })
        ));
        assert_eq!(
            ReserveResult::from_reply(&req, 302, b""),
            Err(UnreadableReply::Status(302))
        );
    }
}
