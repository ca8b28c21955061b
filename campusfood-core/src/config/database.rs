//! Where state shared by several instances lives: a PostgreSQL database,
//! or — without one — embedded redb files per process.

/// `CAMPUSFOOD_DATABASE_URL`: a `postgres://` URL; unset keeps every store
/// embedded (redb files in the data directory).
pub const DATABASE_URL_ENV: &str = "CAMPUSFOOD_DATABASE_URL";
/// `CAMPUSFOOD_DATABASE_SCHEMA`: the schema the tables live in.
pub const DATABASE_SCHEMA_ENV: &str = "CAMPUSFOOD_DATABASE_SCHEMA";
/// Default of [`DATABASE_SCHEMA_ENV`].
pub const DEFAULT_DATABASE_SCHEMA: &str = "campusfood";

/// The shared database, when one is configured.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/database`; `None` keeps the
    /// stores embedded.
    pub url: Option<String>,
    /// Schema of the tables, created when missing.
    pub schema: String,
    /// Connections each process keeps open at most.
    pub pool_size: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            schema: DEFAULT_DATABASE_SCHEMA.to_owned(),
            pool_size: 16,
        }
    }
}

impl DatabaseConfig {
    /// The URL with its password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> Option<String> {
        self.url.as_deref().map(redact_url)
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.redacted_url())
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// `scheme://user:password@host/…` → `scheme://user:***@host/…`; a URL
/// without a password is returned as it is.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://campusfood:secret@127.0.0.1:5432/campusfood"),
            "postgres://campusfood:***@127.0.0.1:5432/campusfood"
        );
        assert_eq!(
            redact_url("amqp://guest:p@ss@host:5672"),
            "amqp://guest:***@host:5672"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("not a url"), "not a url");
        let c = DatabaseConfig {
            url: Some("postgres://a:b@h/d".into()),
            ..DatabaseConfig::default()
        };
        assert!(!format!("{c:?}").contains(":b@"));
        let r = crate::config::RabbitConfig {
            url: "amqp://guest:hunter2@h:5672".into(),
            ..crate::config::RabbitConfig::default()
        };
        assert!(!format!("{r:?}").contains("hunter2"), "{r:?}");
        assert!(
            !format!(
                "{:?}",
                crate::Config {
                    rabbitmq: r,
                    ..crate::Config::default()
                }
            )
            .contains("hunter2")
        );
    }
}
