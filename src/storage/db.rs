//! Postgres connection pool, database creation and embedded migrations.
//!
//! Several instances may start at once against one database: creation tolerates a
//! concurrent `CREATE DATABASE`, and migrations run under a Postgres advisory lock.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use diesel::ConnectionResult;
use diesel::result::ConnectionError;
use diesel::sql_types::{BigInt, Text};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;

/// The migrations of `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Key of the advisory lock held while migrations run ("adaptive" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6164_6170_7469_7665;

/// The Postgres connection pool every request draws from.
pub type DbPool = Pool<AsyncPgConnection>;
/// One connection checked out of [`DbPool`].
pub type DbConn<'a> = PooledConnection<'a, AsyncPgConnection>;

/// Builds the pool without connecting; `connection_timeout` bounds how long a request waits
/// for a connection when Postgres is slow or down.
pub fn pool(database_url: &str, max_size: u32) -> DbPool {
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.custom_setup = Box::new(|url| establish(url).boxed());
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

async fn database_exists(conn: &mut AsyncPgConnection, name: &str) -> anyhow::Result<bool> {
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let found: Found =
        diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
            .bind::<Text, _>(name)
            .get_result(conn)
            .await
            .context("cannot list databases")?;
    Ok(found.n > 0)
}

/// Runs the pending embedded migrations while holding an advisory lock, so instances that
/// start together migrate once. Returns the versions applied.
pub async fn run_migrations(database_url: &str) -> anyhow::Result<Vec<String>> {
    let url = database_url.to_owned();
    // The sync harness drives the async connection with `block_on`: it must not run on a
    // runtime worker, hence `spawn_blocking`.
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        type SyncConn = AsyncConnectionWrapper<AsyncPgConnection>;
        let conn = tokio::runtime::Handle::current()
            .block_on(establish(&url))
            .context("cannot connect to Postgres to migrate")?;
        let mut conn = SyncConn::from(conn);
        let lock =
            diesel::sql_query("SELECT pg_advisory_lock($1)").bind::<BigInt, _>(MIGRATION_LOCK_KEY);
        diesel::RunQueryDsl::execute(lock, &mut conn).context("cannot take the migration lock")?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect())
            .map_err(|e| anyhow::anyhow!("migration failed: {e}"));
        let unlock = diesel::sql_query("SELECT pg_advisory_unlock($1)")
            .bind::<BigInt, _>(MIGRATION_LOCK_KEY);
        let _ = diesel::RunQueryDsl::execute(unlock, &mut conn);
        applied
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
pub async fn migration_status(pool: &DbPool) -> MigrationStatus {
    #[derive(diesel::QueryableByName)]
    struct Applied {
        #[diesel(sql_type = Text)]
        version: String,
    }
    let check = async {
        let mut conn = pool.get().await.ok()?;
        match diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
            .load::<Applied>(&mut *conn)
            .await
        {
            Ok(rows) => Some(rows.into_iter().map(|r| r.version).collect::<Vec<_>>()),
            // A database never migrated has no table: everything is pending.
            Err(diesel::result::Error::DatabaseError(_, info))
                if info.message().contains("does not exist") =>
            {
                Some(Vec::new())
            }
            Err(_) => None,
        }
    };
    let Ok(Some(applied)) = tokio::time::timeout(Duration::from_secs(1), check).await else {
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
pub async fn ping(pool: &DbPool) -> bool {
    let check = async {
        let mut conn = pool.get().await.ok()?;
        diesel::sql_query("SELECT 1").execute(&mut *conn).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Some(_))
    )
}
