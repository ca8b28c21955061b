//! The one AMQP connection a [`RabbitTransport`](super::RabbitTransport)
//! shares between its publisher and consumers: opened on first use, opened
//! again (and the contract topology declared again) by whoever next needs
//! it after it was lost, until the transport is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use amqprs::Close;
use amqprs::callbacks::ConnectionCallback;
use amqprs::connection::{Connection, OpenConnectionArguments};
use async_trait::async_trait;

use super::channel::{BrokerError, Chan, open_channel};
use super::topology::Topology;

/// Where to connect, parsed from an `amqp://user:pass@host:port/vhost` URL.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    host: String,
    port: u16,
    user: String,
    password: String,
    vhost: String,
    heartbeat: u16,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("vhost", &self.vhost)
            .finish_non_exhaustive()
    }
}

/// Heartbeat interval asked for unless the URL says `?heartbeat=N`: short
/// enough to notice a silent broker within a minute.
const DEFAULT_HEARTBEAT_SECS: u16 = 20;

impl Endpoint {
    /// Parses `amqp://[user[:password]@]host[:port][/vhost][?heartbeat=N]`
    /// (user, password and vhost percent-decoded; `guest`/`guest`, port
    /// 5672 and vhost `/` when left out).
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let rest = match url.split_once("://") {
            Some(("amqp", rest)) => rest,
            Some(("amqps", _)) => return Err("amqps (TLS) is not supported".to_owned()),
            Some((scheme, _)) => return Err(format!("unsupported scheme `{scheme}`")),
            None => return Err("expected amqp://host:port".to_owned()),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                (decode(user)?, decode(pass)?)
            }
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let parse_port = |p: &str| p.parse::<u16>().map_err(|_| format!("invalid port `{p}`"));
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| "unclosed `[` in host".to_owned())?;
            match after.strip_prefix(':') {
                Some(p) => (host, parse_port(p)?),
                None if after.is_empty() => (host, 5672),
                None => return Err(format!("unexpected `{after}` after host")),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((host, p)) => (host, parse_port(p)?),
                None => (hostport, 5672),
            }
        };
        if host.is_empty() {
            return Err("no host".to_owned());
        }
        let vhost = if path.is_empty() {
            "/".to_owned()
        } else {
            decode(path)?
        };
        let mut heartbeat = DEFAULT_HEARTBEAT_SECS;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            if let Some(("heartbeat", v)) = pair.split_once('=') {
                heartbeat = v.parse().map_err(|_| format!("invalid heartbeat `{v}`"))?;
            }
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            user,
            password,
            vhost,
            heartbeat,
        })
    }
}

fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape in `{s}`"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8 once decoded"))
}

/// `url` with its password replaced by `***`, fit for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    campusfood_core::config::redact_url(url)
}

/// The shared connection, reopened on demand.
pub(crate) struct Broker {
    endpoint: Endpoint,
    /// The URL with the password masked, for errors and logs.
    url: String,
    /// Connection name shown by the management UI and `rabbitmqctl`.
    name: String,
    connect_timeout: Duration,
    topology: Arc<Topology>,
    current: tokio::sync::Mutex<Option<Connection>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("url", &self.url)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Broker {
    pub(crate) fn new(
        url: &str,
        name: String,
        connect_timeout: Duration,
        topology: Arc<Topology>,
    ) -> Result<Self, BrokerError> {
        let redacted = redact(url);
        let endpoint = Endpoint::parse(url).map_err(|reason| BrokerError::Url {
            url: redacted.clone(),
            reason,
        })?;
        Ok(Self {
            endpoint,
            url: redacted,
            name,
            connect_timeout,
            topology,
            current: tokio::sync::Mutex::new(None),
            closed: AtomicBool::new(false),
        })
    }

    /// The connection name the broker shows.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The open connection, opening one (and declaring the contract
    /// topology on it) when there is none or it was lost.
    pub(crate) async fn connection(&self) -> Result<Connection, BrokerError> {
        if self.is_closed() {
            return Err(BrokerError::Closed);
        }
        let mut current = self.current.lock().await;
        if let Some(conn) = current.as_ref() {
            if conn.is_open() {
                return Ok(conn.clone());
            }
            tracing::info!(url = %self.url, "connection to RabbitMQ lost; reconnecting");
        }
        *current = None;
        let conn = self.open().await?;
        if self.is_closed() {
            let _ = conn.close().await;
            return Err(BrokerError::Closed);
        }
        *current = Some(conn.clone());
        Ok(conn)
    }

    async fn open(&self) -> Result<Connection, BrokerError> {
        let e = &self.endpoint;
        let args = OpenConnectionArguments::new(&e.host, e.port, &e.user, &e.password)
            .virtual_host(&e.vhost)
            .connection_name(&self.name)
            .heartbeat(e.heartbeat)
            .finish();
        let connect_error = |reason: String| BrokerError::Connect {
            url: self.url.clone(),
            reason,
        };
        let conn = tokio::time::timeout(self.connect_timeout, Connection::open(&args))
            .await
            .map_err(|_| connect_error(format!("no answer within {:?}", self.connect_timeout)))?
            .map_err(|err| connect_error(err.to_string()))?;
        conn.register_callback(ConnectionEvents {
            name: self.name.clone(),
        })
        .await?;
        let declared = async {
            let chan = open_channel(&conn).await?;
            self.topology.declare_contract(&chan).await?;
            chan.close().await;
            Ok::<_, BrokerError>(())
        }
        .await;
        if let Err(err) = declared {
            let _ = conn.close().await;
            return Err(connect_error(format!("declaring the topology: {err}")));
        }
        tracing::info!(url = %self.url, name = %self.name, "connected to RabbitMQ");
        Ok(conn)
    }

    /// A new channel on the open connection.
    pub(crate) async fn channel(&self) -> Result<Chan, BrokerError> {
        let conn = self.connection().await?;
        open_channel(&conn).await
    }

    /// Closes the connection for good: later calls fail with
    /// [`BrokerError::Closed`] and consumers end.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(conn) = self.current.lock().await.take() {
            if let Err(err) = conn.close().await {
                tracing::debug!(error = %err, "closing the RabbitMQ connection");
            }
        }
    }
}

struct ConnectionEvents {
    name: String,
}

#[async_trait]
impl ConnectionCallback for ConnectionEvents {
    async fn close(&mut self, _: &Connection, close: Close) -> Result<(), amqprs::error::Error> {
        tracing::warn!(name = %self.name, reason = %close, "RabbitMQ closed the connection");
        Ok(())
    }

    async fn blocked(&mut self, _: &Connection, reason: String) {
        tracing::warn!(name = %self.name, %reason, "RabbitMQ blocked publishing (resource alarm)");
    }

    async fn unblocked(&mut self, _: &Connection) {
        tracing::info!(name = %self.name, "RabbitMQ unblocked publishing");
    }

    async fn secret_updated(&mut self, _: &Connection) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("amqp://guest:guest@127.0.0.1:5672").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.vhost.as_str()),
            ("127.0.0.1", 5672, "/")
        );
        let e = Endpoint::parse("amqp://u%40x:p%3Aw@rabbit/%2fprod?heartbeat=5").unwrap();
        assert_eq!(e.user, "u@x");
        assert_eq!(e.password, "p:w");
        assert_eq!((e.host.as_str(), e.port), ("rabbit", 5672));
        assert_eq!(e.vhost, "/prod");
        assert_eq!(e.heartbeat, 5);
        let e = Endpoint::parse("amqp://localhost/").unwrap();
        assert_eq!((e.user.as_str(), e.vhost.as_str()), ("guest", "/"));
        assert!(Endpoint::parse("amqps://h").is_err());
        assert!(Endpoint::parse("http://h").is_err());
        assert!(Endpoint::parse("amqp://h:notaport").is_err());
        assert!(Endpoint::parse("127.0.0.1:5672").is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/vh"),
            "amqp://guest:***@127.0.0.1:5672/vh"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
