//! NotificationService: "sends" a confirmation (logs it) and keeps a count.
//! It takes injected faults too, so the lab and tests can show what the
//! order service does when notification fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use campusfood_core::events::{NotifyOk, NotifyRequest, SentStatus};
use campusfood_core::fault::FaultInjector;
use campusfood_core::transport::{Message, Reply, RequestHandler};

use crate::reply::{decode_request, error_reply};

/// The notification service.
#[derive(Debug, Default)]
pub struct NotificationService {
    faults: Arc<FaultInjector>,
    sent: AtomicU64,
}

impl NotificationService {
    /// A service with faults from `faults`.
    pub fn new(faults: Arc<FaultInjector>) -> Self {
        Self {
            faults,
            sent: AtomicU64::new(0),
        }
    }

    /// The runtime fault setting (for `/configure`).
    pub fn faults(&self) -> &Arc<FaultInjector> {
        &self.faults
    }

    /// How many notifications were sent.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Sends one notification, unless a fault is injected.
    #[tracing::instrument(name = "notify", skip_all, fields(order_id = %req.order_id, request_id = %req.request_id))]
    pub async fn send(
        &self,
        req: &NotifyRequest,
    ) -> Result<NotifyOk, campusfood_core::fault::InjectedFailure> {
        self.faults.apply(req.order_id.as_str(), 1).await?;
        self.sent.fetch_add(1, Ordering::Relaxed);
        tracing::info!(message = %req.message, "notification sent");
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
            Err(e) => error_reply(500, &e.to_string()),
        }
    }
}
