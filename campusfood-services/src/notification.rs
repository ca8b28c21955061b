//! NotificationService: "sends" a confirmation (logs it) and keeps a count.
//! It takes injected faults too, so the lab and tests can show what the
//! order service does when notification fails.
//!
//! Given a sent-set ([`NotificationService::with_sent_set`], Part A does),
//! it sends each order's confirmation once: a resend from an order service
//! that timed out on the first, to this instance or another sharing the
//! set, is answered as sent without sending again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use campusfood_core::events::{NotifyOk, NotifyRequest, SentStatus};
use campusfood_core::fault::FaultInjector;
use campusfood_core::transport::{Message, Reply, RequestHandler};

use crate::reply::{decode_request, error_reply};
use crate::stores::ProcessedIds;

/// The notification service.
#[derive(Debug, Default)]
pub struct NotificationService {
    faults: Arc<FaultInjector>,
    sent: AtomicU64,
    /// Orders already notified, when sending once per order.
    sent_set: Option<Arc<dyn ProcessedIds>>,
}

/// Why a notification was not sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// An injected fault.
    #[error(transparent)]
    Injected(#[from] campusfood_core::fault::InjectedFailure),
    /// The sent-set does not answer (try again later).
    #[error("sent notifications unreadable: {0}")]
    Store(#[from] crate::stores::StoreError),
}

impl NotificationService {
    /// A service with faults from `faults`.
    pub fn new(faults: Arc<FaultInjector>) -> Self {
        Self {
            faults,
            sent: AtomicU64::new(0),
            sent_set: None,
        }
    }

    /// The same service, sending each order's confirmation once: `set`
    /// records the orders notified (shared by every instance when it is in
    /// the shared database).
    pub fn with_sent_set(mut self, set: Arc<dyn ProcessedIds>) -> Self {
        self.sent_set = Some(set);
        self
    }

    /// The runtime fault setting (for `/configure`).
    pub fn faults(&self) -> &Arc<FaultInjector> {
        &self.faults
    }

    /// How many notifications were sent.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Sends one notification, unless a fault is injected (or, with a
    /// sent-set, it was sent before: then it answers sent and sends
    /// nothing).
    #[tracing::instrument(name = "notify", skip_all, fields(order_id = %req.order_id, request_id = %req.request_id))]
    pub async fn send(&self, req: &NotifyRequest) -> Result<NotifyOk, NotifyError> {
        self.faults.apply(req.order_id.as_str(), 1).await?;
        // Recording first: of two copies sent at once (to any instances
        // sharing the set), exactly one finds the order new.
        let first = match &self.sent_set {
            Some(set) => set.record(req.order_id.as_str()).await?,
            None => true,
        };
        if first {
            self.sent.fetch_add(1, Ordering::Relaxed);
            tracing::info!(message = %req.message, "notification sent");
        } else {
            tracing::info!("already sent: not sent again");
        }
        Ok(NotifyOk {
            status: SentStatus::Sent,
            order_id: req.order_id.clone(),
            request_id: req.request_id,
        })
    }
}

/// Serves `POST /send`.
#[async_trait]
impl RequestHandler for NotificationService {
    async fn call(&self, request: Message) -> Reply {
        let req: NotifyRequest = match decode_request(&request.body) {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        match self.send(&req).await {
            Ok(ok) => Reply::json(200, &ok).unwrap_or_else(|e| error_reply(500, &e.to_string())),
            Err(e @ NotifyError::Injected(_)) => error_reply(500, &e.to_string()),
            Err(e @ NotifyError::Store(_)) => error_reply(503, &e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use campusfood_core::fault::FaultConfig;
    use campusfood_core::order::{Order, OrderStatus, PlaceOrder};

    use super::*;
    use crate::stores::MemoryProcessedIds;

    fn request() -> NotifyRequest {
        let burger = PlaceOrder::from_json(br#"{"item": "burger", "qty": 1}"#).unwrap();
        NotifyRequest::confirming(&Order::new(burger, OrderStatus::Confirmed))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn instances_sharing_a_sent_set_send_each_order_once() {
        let set: Arc<dyn ProcessedIds> = Arc::new(MemoryProcessedIds::new());
        let instances: Vec<Arc<NotificationService>> = (0..2)
            .map(|_| Arc::new(NotificationService::default().with_sent_set(set.clone())))
            .collect();
        let req = request();
        // The same order resent 10 times to each instance, all at once.
        let sends = (0..20).map(|n| {
            let (service, req) = (instances[n % 2].clone(), req.clone());
            tokio::spawn(async move { service.send(&req).await.unwrap() })
        });
        for answer in futures::future::join_all(sends).await {
            assert_eq!(answer.unwrap().status, SentStatus::Sent);
        }
        assert_eq!(instances[0].sent() + instances[1].sent(), 1);
        // Another order is sent, once.
        instances[1].send(&request()).await.unwrap();
        assert_eq!(instances[0].sent() + instances[1].sent(), 2);
    }

    #[tokio::test]
    async fn a_failed_send_is_not_recorded_as_sent() {
        let set: Arc<dyn ProcessedIds> = Arc::new(MemoryProcessedIds::new());
        let faults = Arc::new(FaultInjector::new(
            FaultConfig::new(0.0, 1.0, Some(1)).unwrap(),
        ));
        let failing = NotificationService::new(faults).with_sent_set(set.clone());
        let req = request();
        assert!(matches!(
            failing.send(&req).await,
            Err(NotifyError::Injected(_))
        ));
        let working = NotificationService::default().with_sent_set(set);
        working.send(&req).await.unwrap();
        assert_eq!(working.sent(), 1, "the retry after the failure is sent");
    }
}
