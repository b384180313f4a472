//! Postgres connection pool, units of work, database creation and embedded migrations.
//!
//! Several instances may start at once against one database: creation tolerates a
//! concurrent `CREATE DATABASE`, and migrations run under a Postgres advisory lock.
//!
//! Every request reaches Postgres through [`Db::run`], one unit of work on one connection.
//! With prepared statements on (the default) a connection keeps its statements prepared
//! (the answer's statement is parsed once per connection) and a unit runs in autocommit
//! unless it opens a transaction itself. With `DATABASE_PREPARED_STATEMENTS=false`, for
//! PgBouncer in transaction mode, which hands each transaction to whichever server
//! connection is free: diesel-async (through tokio-postgres) still names each statement
//! (`s{N}`) and sends Parse, Bind and Close as separate protocol exchanges, so a statement
//! parsed on one server could be bound on another. There the statement cache is off (each
//! statement is closed right after it ran) and every unit of work is one transaction, so
//! BEGIN pins one server until COMMIT and no statement outlives its transaction.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use diesel::ConnectionResult;
use diesel::connection::CacheSize;
use diesel::result::ConnectionError;
use diesel::sql_types::{BigInt, Text};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;

use crate::error::AppResult;

/// The migrations of `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Key of the advisory lock held while migrations run ("adaptive" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6164_6170_7469_7665;

/// The Postgres connection pool every request draws from.
pub type DbPool = Pool<AsyncPgConnection>;
/// One connection checked out of [`DbPool`].
pub type DbConn<'a> = PooledConnection<'a, AsyncPgConnection>;

/// Builds the pool without connecting; `connection_timeout` bounds how long a request waits
/// for a connection when Postgres is slow or down. Without `prepared_statements`, each
/// connection closes every statement right after running it (see the module docs).
pub fn pool(database_url: &str, max_size: u32, prepared_statements: bool) -> DbPool {
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.custom_setup = Box::new(move |url| {
        async move {
            let mut conn = establish(url).await?;
            if !prepared_statements {
                conn.set_prepared_statement_cache_size(CacheSize::Disabled);
            }
            Ok(conn)
        }
        .boxed()
    });
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    Pool::builder()
        .max_size(max_size)
        // A request waits at most this long for a connection: when Postgres is down it
        // fails with UNAVAILABLE instead of hanging.
        .connection_timeout(Duration::from_millis(1500))
        .test_on_check_out(false)
        .build_unchecked(manager)
}

/// The Postgres pool and how a unit of work uses it (see the module docs).
#[derive(Clone)]
pub struct Db {
    pool: DbPool,
    /// Whether every unit of work runs in one transaction (PgBouncer transaction mode).
    transaction_per_unit: bool,
}

/// An async closure over a connection whose future is `Send` (the bound diesel-async puts on
/// `transaction`, which cannot be written with `AsyncFnOnce` alone).
pub trait Work<T, R>: AsyncFnOnce(T) -> R + FnOnce(T) -> <Self as Work<T, R>>::Fut {
    /// The closure's future.
    type Fut: Future<Output = R>;
}

impl<F, T, Fut, R> Work<T, R> for F
where
    F: AsyncFnOnce(T) -> R + FnOnce(T) -> Fut,
    Fut: Future<Output = R>,
{
    type Fut = Fut;
}

impl Db {
    /// The pool of `database_url` (see [`pool`]); without `prepared_statements` each unit
    /// of work is one transaction.
    pub fn new(database_url: &str, max_size: u32, prepared_statements: bool) -> Self {
        Self {
            pool: pool(database_url, max_size, prepared_statements),
            transaction_per_unit: !prepared_statements,
        }
    }

    /// The connection pool (for its statistics).
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// Runs one unit of work on one pooled connection: as it is, or inside a transaction
    /// when each unit must be one (a unit that opens its own transaction then runs it as a
    /// savepoint). An error rolls back only in the latter case: a unit must not rely on
    /// either.
    pub async fn run<R, F>(&self, work: F) -> AppResult<R>
    where
        for<'r> F: AsyncFnOnce(&'r mut AsyncPgConnection) -> AppResult<R>
            + Work<&'r mut AsyncPgConnection, AppResult<R>, Fut: Send>
            + Send,
        R: Send,
    {
        let mut conn = self.pool.get().await?;
        self.run_on(&mut conn, work).await
    }

    /// [`Db::run`] on a connection the caller checked out (to tell a failed checkout from
    /// a failed unit).
    pub async fn run_on<R, F>(&self, conn: &mut AsyncPgConnection, work: F) -> AppResult<R>
    where
        for<'r> F: AsyncFnOnce(&'r mut AsyncPgConnection) -> AppResult<R>
            + Work<&'r mut AsyncPgConnection, AppResult<R>, Fut: Send>
            + Send,
        R: Send,
    {
        if self.transaction_per_unit {
            conn.transaction(work).await
        } else {
            work(conn).await
        }
    }

    /// Checks a connection out of the pool (`UNAVAILABLE` when none comes in time).
    pub async fn get(&self) -> AppResult<DbConn<'_>> {
        Ok(self.pool.get().await?)
    }
}

/// Opens one connection. With `sslmode=require` in the URL the connection is encrypted with
/// rustls; like libpq's `require`, the server certificate is not verified (use a private
/// network, or a proxy that verifies, when that matters). Other modes connect in plain text.
pub async fn establish(database_url: &str) -> ConnectionResult<AsyncPgConnection> {
    if !requires_tls(database_url) {
        return AsyncPgConnection::establish(database_url).await;
    }
    let tls = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(tls::EncryptOnly::new()))
        .with_no_client_auth();
    let (client, connection) = tokio_postgres::connect(
        database_url,
        tokio_postgres_rustls::MakeRustlsConnect::new(tls),
    )
    .await
    .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

/// Whether the URL asks for `sslmode=require`.
fn requires_tls(database_url: &str) -> bool {
    url::Url::parse(database_url).is_ok_and(|url| {
        url.query_pairs()
            .any(|(k, v)| k == "sslmode" && v == "require")
    })
}

mod tls {
    //! A certificate verifier that checks signatures but not the certificate chain: the
    //! semantics of libpq's `sslmode=require` (encryption without authentication).
    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    #[derive(Debug)]
    pub struct EncryptOnly(CryptoProvider);

    impl EncryptOnly {
        pub fn new() -> Self {
            Self(rustls::crypto::ring::default_provider())
        }
    }

    impl ServerCertVerifier for EncryptOnly {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// Creates the database named in `database_url` when it does not exist yet.
///
/// Connects to the server's `postgres` maintenance database to do so. Fails (with the
/// reason) when the server cannot be reached at all.
pub async fn create_database_if_missing(database_url: &str) -> anyhow::Result<()> {
    // The common case: the database exists and we can connect to it.
    if establish(database_url).await.is_ok() {
        return Ok(());
    }
    let mut url = url::Url::parse(database_url).context("DATABASE_URL is not a valid URL")?;
    let name = url.path().trim_start_matches('/').to_owned();
    anyhow::ensure!(!name.is_empty(), "DATABASE_URL names no database");
    url.set_path("/postgres");
    let mut conn = establish(url.as_str()).await.with_context(|| {
        format!(
            "cannot connect to Postgres at {}",
            crate::config::redact_url(database_url)
        )
    })?;
    if database_exists(&mut conn, &name).await? {
        return Ok(());
    }
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match diesel::sql_query(format!("CREATE DATABASE {quoted}"))
        .execute(&mut conn)
        .await
    {
        Ok(_) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        // Another instance created it between our check and our CREATE.
        Err(_) if database_exists(&mut conn, &name).await? => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create database {name}")),
    }
}

/// One count.
#[derive(diesel::QueryableByName)]
struct Found {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn database_exists(conn: &mut AsyncPgConnection, name: &str) -> anyhow::Result<bool> {
    let found: Found =
        diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
            .bind::<Text, _>(name)
            .get_result(conn)
            .await
            .context("cannot list databases")?;
    Ok(found.n > 0)
}

/// Runs the pending embedded migrations in one transaction that holds an advisory lock, so
/// instances that start together migrate once, a failed run changes nothing, and the lock
/// (transaction-scoped) is safe behind PgBouncer in transaction mode too. Without
/// `prepared_statements` the connection keeps no statement past its use. Returns the
/// versions applied.
pub async fn run_migrations(
    database_url: &str,
    prepared_statements: bool,
) -> anyhow::Result<Vec<String>> {
    let url = database_url.to_owned();
    // The sync harness drives the async connection with `block_on`: it must not run on a
    // runtime worker, hence `spawn_blocking`.
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        type SyncConn = AsyncConnectionWrapper<AsyncPgConnection>;
        let mut conn = tokio::runtime::Handle::current()
            .block_on(establish(&url))
            .context("cannot connect to Postgres to migrate")?;
        if !prepared_statements {
            conn.set_prepared_statement_cache_size(CacheSize::Disabled);
        }
        let mut conn = SyncConn::from(conn);
        diesel::Connection::transaction(&mut conn, |conn| {
            let lock = diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                .bind::<BigInt, _>(MIGRATION_LOCK_KEY);
            diesel::RunQueryDsl::execute(lock, conn).context("cannot take the migration lock")?;
            conn.run_pending_migrations(MIGRATIONS)
                .map(|versions| versions.iter().map(ToString::to_string).collect())
                .map_err(|e| anyhow::anyhow!("migration failed: {e}"))
        })
    })
    .await
    .context("migration task panicked")?
}

/// Whether the database has every embedded migration (readiness).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrationStatus {
    /// Postgres did not answer within a second.
    Unreachable,
    /// These embedded migrations (versions) are not applied.
    Pending(Vec<String>),
    /// Every embedded migration is applied.
    Applied,
}

/// Compares the versions recorded in `__diesel_schema_migrations` with the embedded
/// migrations, within a second.
pub async fn migration_status(db: &Db) -> MigrationStatus {
    #[derive(diesel::QueryableByName)]
    struct Applied {
        #[diesel(sql_type = Text)]
        version: String,
    }
    let check = db.run(async |conn| {
        // A database never migrated has no table: everything is pending.
        let exists: Found = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_class WHERE oid = to_regclass('__diesel_schema_migrations')",
        )
        .get_result(conn)
        .await?;
        if exists.n == 0 {
            return Ok(Vec::new());
        }
        let rows = diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
            .load::<Applied>(conn)
            .await?;
        Ok(rows.into_iter().map(|r| r.version).collect::<Vec<_>>())
    });
    let Ok(Ok(applied)) = tokio::time::timeout(Duration::from_secs(1), check).await else {
        return MigrationStatus::Unreachable;
    };
    let embedded = diesel::migration::MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .map(|migrations| {
            migrations
                .iter()
                .map(|m| m.name().version().to_string())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let pending: Vec<String> = embedded
        .into_iter()
        .filter(|version| !applied.contains(version))
        .collect();
    if pending.is_empty() {
        MigrationStatus::Applied
    } else {
        MigrationStatus::Pending(pending)
    }
}

/// Whether Postgres answers a trivial query within a second.
pub async fn ping(db: &Db) -> bool {
    let check = db.run(async |conn| {
        diesel::sql_query("SELECT 1").execute(conn).await?;
        Ok(())
    });
    matches!(
        tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Ok(()))
    )
}
