//! Shared helpers of the integration tests: a fresh database per test (copied from a
//! migrated template), a random Redis key prefix per test, the service on an ephemeral
//! port, a GraphQL client, a test-owned `redis-server` (or a six-node Redis Cluster) for
//! fault tests, and a small graphql-transport-ws client.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod pgbouncer;
pub mod ws;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use adaptive_engine::app::{self, App};
use adaptive_engine::auth::{JwtKeys, Role};
use adaptive_engine::config::Config;
use adaptive_engine::server;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Secret of every test token.
pub const JWT_SECRET: &str = "integration-test-secret";

/// The server the tests create databases on (`TEST_DATABASE_URL` overrides; no path).
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432".into())
}

/// The shared Redis of the tests (`TEST_REDIS_URL` overrides).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A unique-enough suffix for names.
pub fn unique(tag: &str) -> String {
    format!("{tag}_{}_{:08x}", std::process::id(), rand::random::<u32>())
}

async fn admin_conn() -> AsyncPgConnection {
    AsyncPgConnection::establish(&format!("{}/postgres", server_url()))
        .await
        .expect("connect to the postgres maintenance database")
}

/// Name of the migrated template: depends on the migrations, so a change makes a new one.
fn template_name() -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut files: Vec<_> = walk(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations"
    )));
    files.sort();
    for file in files {
        for byte in std::fs::read(&file)
            .unwrap_or_default()
            .into_iter()
            .chain(file.to_string_lossy().bytes())
        {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("adaptive_engine_tpl_{hash:016x}")
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

async fn database_exists(conn: &mut AsyncPgConnection, name: &str) -> bool {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let found: N = diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
        .bind::<Text, _>(name)
        .get_result(conn)
        .await
        .expect("query pg_database");
    found.n > 0
}

/// Creates (once per migrations version, across processes) the migrated template.
async fn ensure_template() -> String {
    let name = template_name();
    let mut conn = admin_conn().await;
    if database_exists(&mut conn, &name).await {
        return name;
    }
    diesel::sql_query("SELECT pg_advisory_lock(4242)")
        .execute(&mut conn)
        .await
        .expect("lock");
    if !database_exists(&mut conn, &name).await {
        let building = format!("{name}_building");
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .expect("drop stale template");
        diesel::sql_query(format!("CREATE DATABASE {building}"))
            .execute(&mut conn)
            .await
            .expect("create template");
        adaptive_engine::storage::db::run_migrations(&format!("{}/{building}", server_url()), true)
            .await
            .expect("migrate template");
        diesel::sql_query(format!("ALTER DATABASE {building} RENAME TO {name}"))
            .execute(&mut conn)
            .await
            .expect("rename template");
    }
    diesel::sql_query("SELECT pg_advisory_unlock(4242)")
        .execute(&mut conn)
        .await
        .expect("unlock");
    name
}

/// A database of one test, dropped (WITH FORCE) when the last handle goes.
pub struct TestDb {
    /// Database name.
    pub name: String,
    /// Its URL.
    pub url: String,
}

impl TestDb {
    /// A fresh, migrated database.
    pub async fn new() -> Arc<Self> {
        let template = ensure_template().await;
        let name = unique("ae_test");
        let mut conn = admin_conn().await;
        let mut tries = 0;
        loop {
            match diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}"))
                .execute(&mut conn)
                .await
            {
                Ok(_) => break,
                // Another test is copying the template right now.
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50 + rand::random::<u64>() % 100))
                        .await;
                }
                Err(e) => panic!("cannot create test database: {e}"),
            }
        }
        Arc::new(Self {
            url: format!("{}/{name}", server_url()),
            name,
        })
    }

    /// A database name that does not exist yet (for start-up tests); dropped on drop.
    pub fn unborn() -> Arc<Self> {
        let name = unique("ae_fresh");
        Arc::new(Self {
            url: format!("{}/{name}", server_url()),
            name,
        })
    }

    /// A database that exists but was never migrated; dropped on drop.
    pub async fn empty() -> Arc<Self> {
        let db = Self::unborn();
        diesel::sql_query(format!("CREATE DATABASE {}", db.name))
            .execute(&mut admin_conn().await)
            .await
            .expect("create an empty database");
        db
    }

    /// A direct connection, for assertions against Postgres.
    pub async fn conn(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .expect("connect to test db")
    }

    /// Runs a query returning one bigint column named `n`.
    pub async fn count(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let mut conn = self.conn().await;
        let row: N = diesel::sql_query(sql)
            .get_result(&mut conn)
            .await
            .expect(sql);
        row.n
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut conn = admin_conn().await;
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            });
        })
        .join();
    }
}

/// Options of a test instance.
#[derive(Clone, Default)]
pub struct Options {
    /// Share this database (two instances of one deployment).
    pub db: Option<Arc<TestDb>>,
    /// Share this key prefix.
    pub prefix: Option<String>,
    /// Use this Redis instead of the shared one.
    pub redis_url: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// One running instance of the service.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its database.
    pub db: Arc<TestDb>,
    /// Its Redis key prefix.
    pub prefix: String,
    /// Its Redis URL.
    pub redis_url: String,
    /// The application (for in-process checks).
    pub app: App,
    /// Token minting with the test secret.
    pub keys: JwtKeys,
    /// HTTP client.
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestApp {
    /// An instance with its own database and prefix on the shared Redis.
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    /// Two instances of one fleet: the same database and Redis key prefix.
    pub async fn spawn_pair() -> (Self, Self) {
        let first = Self::spawn().await;
        let second = Self::spawn_with(Options {
            db: Some(first.db.clone()),
            prefix: Some(first.prefix.clone()),
            ..Options::default()
        })
        .await;
        (first, second)
    }

    /// An instance configured by `options`.
    pub async fn spawn_with(options: Options) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_env("TEST_LOG"))
                .with_test_writer()
                .try_init();
        }
        let db = match options.db {
            Some(db) => db,
            None => TestDb::new().await,
        };
        let prefix = options.prefix.unwrap_or_else(|| unique("ae"));
        let redis_url = options.redis_url.unwrap_or_else(redis_url);
        let mut vars: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), db.url.clone()),
            ("REDIS_URL".into(), redis_url.clone()),
            ("REDIS_KEY_PREFIX".into(), prefix.clone()),
            ("JWT_SECRET".into(), JWT_SECRET.into()),
            ("DATABASE_POOL_SIZE".into(), "4".into()),
            ("REDIS_POOL_SIZE".into(), "4".into()),
        ];
        vars.extend(options.env);
        let config =
            Config::from_lookup(|k| vars.iter().rfind(|(n, _)| n == k).map(|(_, v)| v.clone()))
                .expect("test config");
        let app = app::build(&config).await.expect("build app");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        tokio::spawn(server::run(listener, app.clone(), async {
            let _ = rx.await;
        }));
        // Subscriptions need the pub/sub listener; give it a moment when Redis is up.
        app.service
            .events()
            .wait_listening(Duration::from_secs(3))
            .await;
        Self {
            addr,
            db,
            prefix,
            redis_url,
            app,
            keys: JwtKeys::new(JWT_SECRET.as_bytes()),
            http: reqwest::Client::new(),
            shutdown: Some(tx),
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:1234`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// An admin token.
    pub fn admin(&self) -> String {
        self.keys.mint("admin-1", Role::Admin, 3600)
    }

    /// A student token.
    pub fn student(&self, sub: &str) -> String {
        self.keys.mint(sub, Role::Student, 3600)
    }

    /// A proctor token.
    pub fn proctor(&self, sub: &str) -> String {
        self.keys.mint(sub, Role::Proctor, 3600)
    }

    /// GETs `path` and parses the JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    /// Posts a GraphQL operation and returns the whole JSON response.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        post_gql(&self.http, &self.url("/graphql"), token, query, variables).await
    }

    /// Posts a GraphQL operation that must succeed; returns `data`.
    pub async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let response = self.gql(Some(token), query, variables).await;
        assert!(
            response.get("errors").is_none(),
            "unexpected errors: {response}"
        );
        response["data"].clone()
    }

    /// Creates a bank from `(a, b, c)` triples (answer key "A" for every item).
    pub async fn create_bank(&self, params: &[(f64, f64, f64)]) -> String {
        let items: Vec<Value> = params
            .iter()
            .enumerate()
            .map(|(i, (a, b, c))| {
                json!({"externalId": format!("item-{i}"), "a": a, "b": b, "c": c,
                       "contentArea": if i % 2 == 0 { "algebra" } else { "geometry" },
                       "content": {"stem": format!("Question {i}"), "options": ["A", "B", "C", "D"]},
                       "answerKey": "A"})
            })
            .collect();
        let data = self
            .ok(
                &self.admin(),
                "mutation($input: CreateItemBankInput!) { createItemBank(input: $input) { id itemCount } }",
                json!({"input": {"name": "test bank", "items": items}}),
            )
            .await;
        data["createItemBank"]["id"]
            .as_str()
            .expect("bank id")
            .to_owned()
    }

    /// A direct Redis connection to this instance's Redis.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    /// `{prefix}:{id}`.
    pub fn key(&self, exam_id: &str) -> String {
        adaptive_engine::storage::keys::Keys::new(&self.prefix)
            .state(exam_id.parse().expect("exam id"))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Posts a GraphQL operation to `url`.
pub async fn post_gql(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Value {
    let mut request = http
        .post(url)
        .json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("send");
    response.json().await.expect("json response")
}

/// The `extensions.code` of the first error.
pub fn error_code(response: &Value) -> String {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error with a code, got {response}"))
        .to_owned()
}

/// The GraphQL selections the tests use.
pub const CREATE_ASSESSMENT: &str = "mutation($input: CreateAssessmentInput!) {
    createAssessment(input: $input) { id name itemBankId status feedback maxAttemptsPerStudent
    opensAt closesAt maxItems design } }";
/// Start an exam of an assessment.
pub const START: &str = "mutation($input: StartExamInput!) { startExam(input: $input) {
    resumed examSession { id studentId assessmentId status theta standardError itemsCompleted }
    nextItem { id itemId position content contentArea } } }";
/// Submit an answer.
pub const SUBMIT: &str = "mutation($input: SubmitAnswerInput!) { submitAnswer(input: $input) {
    theta standardError itemsCompleted completed stopReason
    nextItem { id itemId position content contentArea }
    examSession { id status theta standardError itemsCompleted } } }";
/// Engine summary.
pub const SUMMARY: &str = "query($id: ID!) { engineSummary(examSessionId: $id) {
    examSessionId theta standardError itemsCompleted maxItems status source ttlSeconds } }";

/// A `redis-server` owned by one test, on its own port, so the test can stop, restart or
/// flush it without touching anyone else.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    child: Option<Child>,
    args: Vec<String>,
}

impl RedisServer {
    /// Starts one on a free port.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts one with extra arguments.
    pub async fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let mut server = Self {
            port,
            child: None,
            args: extra.iter().map(std::string::ToString::to_string).collect(),
        };
        server.restart().await;
        server
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it again (on the same port) after [`RedisServer::stop`].
    pub async fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("url");
        for _ in 0..100 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("test redis-server did not start");
    }

    /// Kills it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster owned by one test: six `redis-server` processes on free loopback ports
/// (three masters, each with one replica, `cluster-node-timeout` 1000 ms so a killed
/// master's replica takes over within a few seconds), all killed on drop.
pub struct RedisCluster {
    /// Every node's port, in the order given to `redis-cli --cluster create` (the first
    /// three are the initial masters).
    pub ports: Vec<u16>,
    /// The running processes by port (a killed node is removed).
    children: std::collections::HashMap<u16, Child>,
    /// Holds the nodes' `nodes-N.conf`.
    dir: std::path::PathBuf,
}

/// One node's view of who serves a slot: (first slot, last slot, master port).
type SlotRange = (u16, u16, u16);

impl RedisCluster {
    /// Starts six nodes, creates the cluster and waits until every node says
    /// `cluster_state:ok` and every replica is in sync with its master.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(unique("redis-cluster"));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut cluster = Self {
            ports: Vec::new(),
            children: std::collections::HashMap::new(),
            dir,
        };
        for _ in 0..6 {
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(cluster.dir.join(format!("nodes-{port}.conf")))
                .args(["--cluster-node-timeout", "1000"])
                // Replicas sync at once (by default a master waits 5 s for more of them).
                .args(["--repl-diskless-sync-delay", "0"])
                .args(["--appendonly", "no", "--save", ""])
                .arg("--dir")
                .arg(&cluster.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed");
            cluster.ports.push(port);
            cluster.children.insert(port, child);
        }
        for &port in &cluster.ports {
            poll(
                "the node answering PING",
                Duration::from_secs(10),
                async || {
                    let mut conn = node(port).await?;
                    redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .ok()
                },
            )
            .await;
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let created = tokio::task::spawn_blocking(move || {
            Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(&nodes)
                .args(["--cluster-replicas", "1", "--cluster-yes"])
                .output()
                .expect("redis-cli must be installed")
        })
        .await
        .expect("join");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_ok().await;
        // A replica that has not synced yet would refuse to take over from its master.
        for &port in &cluster.ports {
            poll("the replica in sync", Duration::from_secs(30), async || {
                let mut conn = node(port).await?;
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                let replica = info.lines().any(|l| l.trim() == "role:slave");
                let synced = info.lines().any(|l| l.trim() == "master_link_status:up");
                (!replica || synced).then_some(())
            })
            .await;
        }
        cluster
    }

    /// `REDIS_CLUSTER_URLS` naming every node.
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The ports of the nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.children.keys().copied().collect();
        ports.sort_unstable();
        ports
    }

    /// Waits until every running node says `cluster_state:ok` and serves every slot
    /// through a running master.
    pub async fn wait_ok(&self) {
        let live = self.live_ports();
        for &port in &live {
            poll("cluster_state:ok", Duration::from_secs(30), async || {
                let mut conn = node(port).await?;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                info.lines()
                    .any(|l| l.trim() == "cluster_state:ok")
                    .then_some(())
            })
            .await;
            poll(
                "every slot served by a live master",
                Duration::from_secs(30),
                async || {
                    let slots = slot_ranges(port).await?;
                    let covered: u32 = slots.iter().map(|(a, b, _)| u32::from(b - a) + 1).sum();
                    (covered == 16384 && slots.iter().all(|(_, _, m)| live.contains(m)))
                        .then_some(())
                },
            )
            .await;
        }
    }

    /// The slot of `key`, as the cluster computes it (`CLUSTER KEYSLOT`).
    pub async fn slot_of(&self, key: &str) -> u16 {
        let mut conn = node(self.live_ports()[0]).await.expect("a live node");
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("CLUSTER KEYSLOT")
    }

    /// The port of the master serving `slot`, as a running node sees it (`CLUSTER SLOTS`).
    pub async fn master_of_slot(&self, slot: u16) -> u16 {
        let ranges = slot_ranges(self.live_ports()[0])
            .await
            .expect("CLUSTER SLOTS");
        ranges
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map(|(_, _, master)| *master)
            .unwrap_or_else(|| panic!("slot {slot} is not served: {ranges:?}"))
    }

    /// The port of the master serving `key`.
    pub async fn master_of(&self, key: &str) -> u16 {
        self.master_of_slot(self.slot_of(key).await).await
    }

    /// Clients subscribed to the classic channel `channel` on the node at `port`
    /// (`PUBSUB NUMSUB` counts that node's own subscribers only).
    pub async fn subscribers_on(&self, port: u16, channel: &str) -> i64 {
        let mut conn = node(port).await.expect("a live node");
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await
            .expect("PUBSUB NUMSUB");
        count
    }

    /// Kills the node at `port` with SIGKILL (no shutdown, no failover handshake).
    pub fn kill(&mut self, port: u16) {
        if let Some(mut child) = self.children.remove(&port) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A connection to the cluster (it routes by key, as the service's does).
    pub async fn client(&self) -> redis::cluster_async::ClusterConnection {
        let urls: Vec<String> = self
            .live_ports()
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect();
        redis::cluster::ClusterClient::new(urls)
            .expect("cluster client")
            .get_async_connection()
            .await
            .expect("cluster connection")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for port in self.live_ports() {
            self.kill(port);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A direct connection to one node (`None` when it does not answer).
async fn node(port: u16) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    tokio::time::timeout(
        Duration::from_secs(1),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()
}

/// The slot ranges and their masters' ports as the node at `port` sees them.
async fn slot_ranges(port: u16) -> Option<Vec<SlotRange>> {
    let mut conn = node(port).await?;
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await
        .ok()?;
    slots
        .into_iter()
        .map(|range| {
            // [first, last, [host, port, id, …], replicas…]
            let redis::Value::Array(fields) = range else {
                return None;
            };
            let first: u16 = redis::from_redis_value(<[_]>::first(&fields)?.clone()).ok()?;
            let last: u16 = redis::from_redis_value(fields.get(1)?.clone()).ok()?;
            let redis::Value::Array(master) = fields.get(2)? else {
                return None;
            };
            let port: u16 = redis::from_redis_value(master.get(1)?.clone()).ok()?;
            Some((first, last, port))
        })
        .collect()
}

/// Polls `check` every 50 ms until it gives a value, or panics after `timeout` naming `what`.
pub async fn poll<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The WebSocket subprotocols the server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsProtocol {
    /// `graphql-transport-ws` (npm graphql-ws).
    TransportWs,
    /// The legacy `graphql-ws` (npm subscriptions-transport-ws).
    LegacyGraphqlWs,
}

/// A graphql-transport-ws (or legacy graphql-ws) client subscribed to one operation.
pub struct Subscription {
    socket: ws::Ws,
}

impl Subscription {
    /// Connects to `addr`, sends `connection_init` with `token`, and subscribes to
    /// `thetaUpdates` of `exam_id`. Returns the error when the server refuses.
    pub async fn theta_updates(
        addr: SocketAddr,
        token: Option<&str>,
        exam_id: &str,
    ) -> Result<Self, String> {
        Self::theta_updates_over(addr, token, exam_id, WsProtocol::TransportWs).await
    }

    /// [`Subscription::theta_updates`] over the given subprotocol.
    pub async fn theta_updates_over(
        addr: SocketAddr,
        token: Option<&str>,
        exam_id: &str,
        protocol: WsProtocol,
    ) -> Result<Self, String> {
        Self::subscribe_theta_updates(addr, token, exam_id, protocol, false).await
    }

    /// Subscribes to `thetaUpdates(includeCurrent: true)` of `exam_id` and waits for the
    /// first payload, the exam's state now. The server registers the subscription on its
    /// event bus *before* it reads that state, so once this returns every later answer
    /// of the exam is delivered: no sleep needs to stand in for "the subscription is
    /// live". Returns the subscription and that first payload (or the error message).
    pub async fn theta_updates_live(
        addr: SocketAddr,
        token: Option<&str>,
        exam_id: &str,
        protocol: WsProtocol,
    ) -> Result<(Self, Value), String> {
        let mut subscription =
            Self::subscribe_theta_updates(addr, token, exam_id, protocol, true).await?;
        let current = subscription
            .next(Duration::from_secs(10))
            .await
            .ok_or("no first thetaUpdates payload (includeCurrent)")?;
        Ok((subscription, current))
    }

    async fn subscribe_theta_updates(
        addr: SocketAddr,
        token: Option<&str>,
        exam_id: &str,
        protocol: WsProtocol,
        include_current: bool,
    ) -> Result<Self, String> {
        let (protocol_name, subscribe) = match protocol {
            WsProtocol::TransportWs => ("graphql-transport-ws", "subscribe"),
            WsProtocol::LegacyGraphqlWs => ("graphql-ws", "start"),
        };
        let mut socket = ws::connect(addr, protocol_name).await?;
        match ws::init(&mut socket, token).await {
            msg if msg["type"] == "connection_ack" => {}
            other => return Err(format!("no connection_ack: {other}")),
        }
        ws::send(
            &mut socket,
            json!({"id": "1", "type": subscribe, "payload": {
                "query": "subscription($id: ID!, $current: Boolean!) { thetaUpdates(examSessionId: $id, includeCurrent: $current) { examSessionId theta standardError itemsCompleted completed at } }",
                "variables": {"id": exam_id, "current": include_current}}}),
        )
        .await;
        Ok(Self { socket })
    }

    /// The next `thetaUpdates` payload (or error message), within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        loop {
            let msg = ws::next_json(&mut self.socket, timeout).await;
            if msg.is_null() {
                return None;
            }
            match msg["type"].as_str() {
                Some("next" | "data") => return Some(msg["payload"].clone()),
                Some("error" | "complete") => return Some(msg),
                _ => continue,
            }
        }
    }
}

/// An independent 3PL EAP (catR's eapEst/eapSem: trapezoid over `n` points on
/// [lo, hi] with a N(mean, sd) prior, D = 1), written plainly for the tests.
pub fn reference_eap(
    items: &[(f64, f64, f64)],
    responses: &[bool],
    mean: f64,
    sd: f64,
    lo: f64,
    hi: f64,
    n: usize,
) -> (f64, f64) {
    reference_eap_of(
        |t| {
            items
                .iter()
                .zip(responses)
                .map(|(&(a, b, c), &u)| {
                    let p = c + (1.0 - c) / (1.0 + (-a * (t - b)).exp());
                    if u { p } else { 1.0 - p }
                })
                .product()
        },
        mean,
        sd,
        lo,
        hi,
        n,
    )
}

/// The 4PL probability of a right answer, `c + (d − c)/(1 + exp(−D·a·(θ − b)))`.
pub fn reference_p_4pl(a: f64, b: f64, c: f64, d: f64, scaling: f64, theta: f64) -> f64 {
    c + (d - c) / (1.0 + (-scaling * a * (theta - b)).exp())
}

/// 4PL Fisher information `P'²/(P·(1 − P))` with `P' = D·a·(P − c)·(d − P)/(d − c)`.
pub fn reference_information_4pl(a: f64, b: f64, c: f64, d: f64, scaling: f64, theta: f64) -> f64 {
    let p = reference_p_4pl(a, b, c, d, scaling, theta);
    let slope = scaling * a * (p - c) * (d - p) / (d - c);
    slope * slope / (p * (1.0 - p))
}

/// The EAP of any likelihood `likelihood(θ)` (the product over the answered items of
/// the probability of each recorded score), as catR's eapEst/eapSem compute it: the
/// grid is `n` equally spaced points on [lo, hi] (both ends included), the weights are
/// N(mean, sd) density × likelihood, and every integral is the trapezoid rule
/// `Σ (x_{k+1} − x_k)·(f_k + f_{k+1})/2`. Returns (posterior mean, posterior SD).
pub fn reference_eap_of(
    likelihood: impl Fn(f64) -> f64,
    mean: f64,
    sd: f64,
    lo: f64,
    hi: f64,
    n: usize,
) -> (f64, f64) {
    let grid: Vec<f64> = (0..n)
        .map(|k| lo + (hi - lo) * k as f64 / (n - 1) as f64)
        .collect();
    let weight: Vec<f64> = grid
        .iter()
        .map(|&t| {
            let prior = (-(t - mean).powi(2) / (2.0 * sd * sd)).exp()
                / (sd * (2.0 * std::f64::consts::PI).sqrt());
            prior * likelihood(t)
        })
        .collect();
    let trapezoid = |y: &[f64]| -> f64 {
        (0..n - 1)
            .map(|k| (grid[k + 1] - grid[k]) * (y[k] + y[k + 1]) / 2.0)
            .sum()
    };
    let norm = trapezoid(&weight);
    let mean_y: Vec<f64> = grid.iter().zip(&weight).map(|(t, w)| t * w).collect();
    let theta = trapezoid(&mean_y) / norm;
    let var_y: Vec<f64> = grid
        .iter()
        .zip(&weight)
        .map(|(t, w)| (t - theta).powi(2) * w)
        .collect();
    (theta, (trapezoid(&var_y) / norm).sqrt())
}

/// 3PL Fisher information (D = 1), written plainly for the tests.
pub fn reference_information(a: f64, b: f64, c: f64, theta: f64) -> f64 {
    let p = c + (1.0 - c) / (1.0 + (-a * (theta - b)).exp());
    a * a * ((p - c) / (1.0 - c)).powi(2) * (1.0 - p) / p
}

/// A deterministic 3PL bank of `n` items.
pub fn bank_params(n: usize) -> Vec<(f64, f64, f64)> {
    (0..n)
        .map(|i| {
            let x = i as f64;
            (
                0.6 + (x * 0.37).sin().abs() * 1.6,
                -2.5 + 5.0 * ((x * 0.618).fract()),
                0.05 + 0.2 * ((x * 0.29).cos().abs()),
            )
        })
        .collect()
}

/// Item ids of a bank in creation order (the order of `bank_params`), read from Postgres.
pub async fn bank_item_ids(app: &TestApp, bank: &str) -> Vec<String> {
    use adaptive_engine::storage::schema::items;
    use diesel::{ExpressionMethods, QueryDsl};
    let mut conn = app.db.conn().await;
    let ids: Vec<i64> = items::table
        .filter(items::item_bank_id.eq(bank.parse::<i64>().expect("bank id")))
        .order(items::id.asc())
        .select(items::id)
        .load(&mut conn)
        .await
        .expect("item ids");
    ids.into_iter().map(|i| i.to_string()).collect()
}

/// Answers the presented item: "A" (the key) when `correct`, else "C".
pub async fn answer(app: &TestApp, token: &str, exam: &str, item: &str, correct: bool) -> Value {
    let response = if correct { "A" } else { "C" };
    app.ok(
        token,
        SUBMIT,
        json!({"input": {"examSessionId": exam, "itemId": item, "response": response}}),
    )
    .await["submitAnswer"]
        .clone()
}

/// Creates an assessment of `bank` (as admin) with `design` and extra input fields
/// (`feedback`, `maxAttemptsPerStudent`, window...); returns its id.
pub async fn create_assessment(app: &TestApp, bank: &str, design: Value, extra: Value) -> String {
    let mut input = json!({"name": "test assessment", "itemBankId": bank, "design": design});
    if let (Some(input), Some(extra)) = (input.as_object_mut(), extra.as_object()) {
        input.extend(extra.clone());
    }
    let data = app
        .ok(&app.admin(), CREATE_ASSESSMENT, json!({"input": input}))
        .await;
    data["createAssessment"]["id"]
        .as_str()
        .expect("assessment id")
        .to_owned()
}

/// Starts (or resumes) the caller's exam of an assessment; returns its id and the payload.
pub async fn start_assessment(app: &TestApp, token: &str, assessment: &str) -> (String, Value) {
    let data = app
        .ok(token, START, json!({"input": {"assessmentId": assessment}}))
        .await;
    let exam = data["startExam"]["examSession"]["id"]
        .as_str()
        .expect("exam id")
        .to_owned();
    (exam, data["startExam"].clone())
}

/// Starts an exam of a new assessment of `bank` whose design is `design` (unlimited
/// attempts, feedback ESTIMATES); returns the exam id and the payload.
pub async fn start(app: &TestApp, token: &str, bank: &str, design: Value) -> (String, Value) {
    let assessment =
        create_assessment(app, bank, design, json!({"maxAttemptsPerStudent": null})).await;
    start_assessment(app, token, &assessment).await
}

/// One answer exactly as the client saw it acknowledged (a `submitAnswer` payload), in
/// the shape of its `attempts` row.
#[derive(Clone, Debug, PartialEq)]
pub struct AcknowledgedAnswer {
    /// `attempts.exam_session_id`.
    pub exam_session_id: i64,
    /// `attempts.position` (the payload's `itemsCompleted`).
    pub position: i32,
    /// `attempts.item_id`: the item answered.
    pub item_id: i64,
    /// `attempts.response`: what the client sent.
    pub response: String,
    /// `attempts.score`.
    pub score: i32,
    /// `attempts.correct`.
    pub correct: bool,
    /// `attempts.theta`: the acknowledged estimate.
    pub theta: f64,
    /// `attempts.standard_error`.
    pub standard_error: f64,
    /// `attempts.next_item_id`: the item the payload presented next.
    pub next_item_id: Option<i64>,
    /// `attempts.completed`.
    pub completed: bool,
}

/// Every row of `attempts` in `db` (all exams), ordered by exam and position.
pub async fn recorded_answers(db: &TestDb) -> Vec<AcknowledgedAnswer> {
    use adaptive_engine::storage::schema::attempts;
    use diesel::{ExpressionMethods, QueryDsl};
    type Row = (
        i64,
        i32,
        i64,
        String,
        i32,
        bool,
        f64,
        f64,
        Option<i64>,
        bool,
    );
    let mut conn = db.conn().await;
    let rows: Vec<Row> = attempts::table
        .order((attempts::exam_session_id.asc(), attempts::position.asc()))
        .select((
            attempts::exam_session_id,
            attempts::position,
            attempts::item_id,
            attempts::response,
            attempts::score,
            attempts::correct,
            attempts::theta,
            attempts::standard_error,
            attempts::next_item_id,
            attempts::completed,
        ))
        .load(&mut conn)
        .await
        .expect("attempts");
    rows.into_iter()
        .map(
            |(
                exam_session_id,
                position,
                item_id,
                response,
                score,
                correct,
                theta,
                se,
                next,
                completed,
            )| {
                AcknowledgedAnswer {
                    exam_session_id,
                    position,
                    item_id,
                    response,
                    score,
                    correct,
                    theta,
                    standard_error: se,
                    next_item_id: next,
                    completed,
                }
            },
        )
        .collect()
}

/// Follows an exam, checks every estimate against the reference EAP, and remembers every
/// acknowledged answer so that [`ExamChecker::assert_recorded_exactly`] can compare them
/// with Postgres row by row.
pub struct ExamChecker {
    /// Bank parameters in item-id order.
    pub params: Vec<(f64, f64, f64)>,
    /// Bank item ids in the same order.
    pub ids: Vec<String>,
    /// Items seen so far (indices).
    pub seen: Vec<usize>,
    /// Responses so far.
    pub responses: Vec<bool>,
    /// The answers acknowledged so far, in order.
    pub acknowledged: Vec<AcknowledgedAnswer>,
}

impl ExamChecker {
    /// A checker of exams on a bank of `params` whose item ids are `ids` (same order).
    pub fn new(params: Vec<(f64, f64, f64)>, ids: Vec<String>) -> Self {
        Self {
            params,
            ids,
            seen: Vec::new(),
            responses: Vec::new(),
            acknowledged: Vec::new(),
        }
    }

    /// Records an answer ("A", the key, when `correct`, else "C", as [`answer`] sends)
    /// acknowledged with the `submitAnswer` payload `result` (selected with [`SUBMIT`]),
    /// and asserts the result equals the reference EAP to 1e-9.
    pub fn check(&mut self, item: &str, correct: bool, result: &Value) {
        let index = self
            .ids
            .iter()
            .position(|i| i == item)
            .expect("item in bank");
        self.seen.push(index);
        self.responses.push(correct);
        let administered: Vec<(f64, f64, f64)> =
            self.seen.iter().map(|&i| self.params[i]).collect();
        let (theta, se) = reference_eap(&administered, &self.responses, 0.0, 1.0, -4.0, 4.0, 33);
        let got_theta = result["theta"].as_f64().expect("theta");
        let got_se = result["standardError"].as_f64().expect("se");
        let n = self.seen.len();
        assert!(
            (got_theta - theta).abs() < 1e-9,
            "answer {n}: theta {got_theta} vs reference {theta}"
        );
        assert!(
            (got_se - se).abs() < 1e-9,
            "answer {n}: se {got_se} vs reference {se}"
        );
        assert_eq!(result["itemsCompleted"].as_u64(), Some(n as u64));
        let id = |v: &Value| v.as_str().and_then(|s| s.parse::<i64>().ok());
        self.acknowledged.push(AcknowledgedAnswer {
            exam_session_id: id(&result["examSession"]["id"])
                .expect("the payload names its exam (examSession { id })"),
            position: i32::try_from(n).expect("position"),
            item_id: item.parse().expect("item id"),
            response: if correct { "A" } else { "C" }.to_owned(),
            score: i32::from(correct),
            correct,
            theta: got_theta,
            standard_error: got_se,
            next_item_id: id(&result["nextItem"]["itemId"]),
            completed: result["completed"].as_bool().expect("completed"),
        });
    }

    /// Asserts that the `attempts` of `db` (every exam in it) are exactly the answers
    /// acknowledged to the client, row by row: same exam, position, item, response, score,
    /// estimate and next item; nothing more, nothing less, nothing doubled.
    pub async fn assert_recorded_exactly(&self, db: &TestDb) {
        let recorded = recorded_answers(db).await;
        let mut acknowledged = self.acknowledged.clone();
        acknowledged.sort_by_key(|a| (a.exam_session_id, a.position));
        for (n, (row, acknowledged)) in recorded.iter().zip(&acknowledged).enumerate() {
            assert_eq!(
                row, acknowledged,
                "attempt row {n} differs from the answer acknowledged"
            );
        }
        assert_eq!(
            recorded.len(),
            acknowledged.len(),
            "answers recorded = answers acknowledged; recorded {recorded:#?}"
        );
    }
}

impl Subscription {
    /// Waits for the server to close the socket; returns the close code (None: no close
    /// frame, or nothing within `timeout`).
    pub async fn close_code(&mut self, timeout: Duration) -> Option<u16> {
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }
}

/// A PostgreSQL server owned by one test (its own data directory and port), so the test
/// can stop and restart it. Runs as the `postgres` user when the tests run as root.
pub struct PgServer {
    /// Its port.
    pub port: u16,
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
}

impl PgServer {
    /// Creates and starts a fresh cluster with trust auth for `root`.
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb");
        let dir = std::env::temp_dir().join(unique("pgdata"));
        std::fs::create_dir_all(&dir).expect("data dir");
        let server = Self {
            port: free_port(),
            dir,
            bin,
        };
        if is_root() {
            let _ = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&server.dir)
                .status();
        }
        let status = server
            .command("initdb")
            .args(["-D"])
            .arg(server.dir.join("data"))
            .args(["-A", "trust", "-U", "root", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        server.resume();
        server
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// `postgres://root@127.0.0.1:{port}/{database}`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://root@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts it (again), waiting until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            self.port,
            self.dir.display()
        );
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-o", &options, "-l"])
            .arg(self.dir.join("log"))
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pg_ctl start");
        assert!(status.success(), "pg_ctl start failed");
    }

    /// Stops it (fast shutdown: open connections are cut).
    pub fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Sends SIGTERM to a process.
pub fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
