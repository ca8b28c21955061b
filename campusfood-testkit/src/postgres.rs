//! A Postgres schema of a test's own, dropped when the test ends (also
//! after a failed assertion).

/// Where tests find Postgres unless `CAMPUSFOOD_TEST_DATABASE_URL` says
/// otherwise (`scripts/test.sh` starts it and sets that).
pub const DEFAULT_URL: &str = "postgres://campusfood:campusfood@127.0.0.1:5432/campusfood";

/// What a test says when Postgres does not answer.
pub const NOT_RUNNING: &str =
    "Postgres is not reachable: start it with `scripts/brokers.sh up postgres`";

/// The test database's URL.
pub fn url() -> String {
    std::env::var("CAMPUSFOOD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A schema named `t_<test>_<random>`, dropped with everything in it when
/// this is dropped.
#[derive(Debug)]
pub struct TestSchema {
    name: String,
}

impl TestSchema {
    /// A fresh schema name for `test` (created by whoever connects first).
    pub fn new(test: &str) -> Self {
        Self {
            name: format!("t_{test}_{:08x}", random()),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A plain session with the schema first on its search path.
    pub async fn session(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{NOT_RUNNING} ({e})"));
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {0}; SET search_path = {0}",
                self.name
            ))
            .await
            .unwrap();
        client
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
        crate::on_own_runtime(async move {
            if let Ok((client, conn)) = tokio_postgres::connect(&url(), tokio_postgres::NoTls).await
            {
                tokio::spawn(conn);
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await;
            }
        });
    }
}

fn random() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u32
}
