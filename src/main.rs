//! The `adaptive-engine` command line: `serve` (default), `migrate`, `schema`, `token`,
//! `import-bank`, `simulate`, `export`. Reads `./.env`, sets up logging (`RUST_LOG`,
//! `LOG_FORMAT`), parses arguments and hands over to the library.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use adaptive_engine::auth::{JwtKeys, Role};
use adaptive_engine::config::{Config, redact_url};
use adaptive_engine::{app, bank_file, exam, export, graphql, server, simulate, storage};

mod telemetry;

/// mimalloc instead of the system allocator: glibc malloc/free were ~13 % of the server's
/// CPU under load (README "Performance"), and simulation allocates per examinee too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Computerized adaptive testing service: IRT engine, GraphQL API, Postgres + Redis.
///
/// Configuration comes from the environment (and a `.env` file in the working directory,
/// not its parents): DATABASE_URL, REDIS_URL (or REDIS_HOST/PORT/DB/PASSWORD),
/// REDIS_KEY_PREFIX, ENGINE_STATE_TTL_SECONDS, JWT_SECRET, HOST, PORT, METRICS_ADDR,
/// RUST_LOG, LOG_FORMAT (pretty or json). See the README for the full table.
#[derive(Parser)]
#[command(name = "adaptive-engine", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default): creates and migrates the database if needed (not with
    /// DATABASE_PREPARED_STATEMENTS=false), then serves GraphQL on
    /// http://HOST:PORT/graphql (GraphiQL in a browser).
    Serve,
    /// Create the database if missing and apply pending migrations in one transaction, then
    /// exit (with DATABASE_PREPARED_STATEMENTS=false the database must exist; pointing
    /// DATABASE_URL at Postgres itself rather than a pooler is the usual way).
    Migrate,
    /// Print the GraphQL schema (SDL), as committed in schema.graphql.
    Schema,
    /// Mint a JWT signed with JWT_SECRET, for curl, GraphiQL or tests.
    Token {
        /// The caller's role.
        #[arg(long, value_enum)]
        role: Role,
        /// The subject: the student id (owner of the exams they start) or admin id.
        #[arg(long)]
        sub: String,
        /// How long the token is valid.
        #[arg(long, default_value_t = 3600)]
        ttl_seconds: u64,
    },
    /// Create an item bank from a file: JSON (a list of ItemInput objects, or an object
    /// {"name", "scalingConstant", "items": [...]} as CreateItemBankInput), or CSV with the
    /// columns externalId,a,b,c,d,contentArea,content,answerKey (model, thresholds, scoring,
    /// enemyGroup optional; other columns ignored). Prints the new bank id.
    ImportBank {
        /// The JSON or CSV file.
        file: PathBuf,
        /// The bank's name (default: the file's "name", else the file name without
        /// extension).
        #[arg(long)]
        name: Option<String>,
        /// The scaling constant D of the logistic model (default: the file's
        /// "scalingConstant", else 1; when both are given they must agree).
        #[arg(long)]
        scaling_constant: Option<f64>,
    },
    /// Simulate examinees taking adaptive exams on the engine that serves them (no database,
    /// no Redis): recovery of the true abilities, test length and item exposure of a design.
    /// With no arguments: 1000 N(0, 1) examinees, 20-item MAX_INFO/EAP exams on a built-in
    /// bank of 500 3PL items.
    Simulate(Box<simulate::Options>),
    /// Write the answers of every exam of an assessment (any status) for calibration tools
    /// (mirt, catR): CSV or JSON Lines with one row per answer (examSessionId, studentId,
    /// assessmentId, position, itemId, externalId, response, score, theta, standardError,
    /// answeredAt; numbers at full precision), or a response matrix. Reads DATABASE_URL, from
    /// one consistent snapshot; changes nothing.
    Export {
        /// The assessment's id.
        #[arg(long, value_name = "ID")]
        assessment: i64,
        /// The output form.
        #[arg(long, value_enum, default_value_t = export::Format::Csv)]
        format: export::Format,
        /// Write to this file (it appears only once complete) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Calibrate a bank's pretest items from their pretest answers (what the calibrateItems
    /// mutation starts in the background), store the run and print it as JSON. Reads
    /// DATABASE_URL.
    Calibrate {
        /// The bank's id.
        #[arg(long, value_name = "ID")]
        bank: i64,
        /// fixed-theta, oem or mem.
        #[arg(long, value_enum, default_value_t = CliMethod::Mem)]
        method: CliMethod,
        /// 2pl or 3pl.
        #[arg(long, value_enum, default_value_t = CliModel::TwoPl)]
        model: CliModel,
        /// Items with fewer pretest answers get no estimate.
        #[arg(long, default_value_t = 200, value_name = "N")]
        min_responses: i32,
    },
}

/// `calibrate --method`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CliMethod {
    /// Abilities fixed at the operational EAP.
    FixedTheta,
    /// One EM cycle.
    Oem,
    /// EM cycles to convergence.
    Mem,
}

/// `calibrate --model`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CliModel {
    /// a, b.
    #[value(name = "2pl")]
    TwoPl,
    /// a, b, c.
    #[value(name = "3pl")]
    ThreePl,
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines (the default); coloured only on a terminal.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    /// Reads `LOG_FORMAT`: `pretty` (default, also when unset or empty) or `json`.
    fn from_env() -> anyhow::Result<Self> {
        let raw = std::env::var("LOG_FORMAT").unwrap_or_default();
        match raw.trim().to_ascii_lowercase().as_str() {
            "" | "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            _ => anyhow::bail!("LOG_FORMAT: expected json or pretty, got {raw:?}"),
        }
    }
}

/// Loads `./.env` when the working directory has one (never a parent directory's, which
/// `dotenvy::dotenv` would find). Variables already set in the environment win.
fn load_dotenv() {
    let path = Path::new(".env");
    if path.is_file() {
        if let Err(e) = dotenvy::from_path(path) {
            eprintln!("adaptive-engine: ignoring ./.env: {e}");
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG`, in `format`; ANSI colours only when stderr is a
/// terminal (never in files or pipes). With the `otlp` feature and an OTLP endpoint, spans
/// are also exported (see `telemetry`); the returned guard flushes them.
fn init_logging(format: LogFormat) -> anyhow::Result<telemetry::Telemetry> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,tower_http=warn".into());
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let lines = match format {
        LogFormat::Pretty => lines.boxed(),
        LogFormat::Json => lines.json().flatten_event(true).boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(lines);
    let (export, telemetry) = telemetry::layer()?;
    registry.with(export).init();
    Ok(telemetry)
}

fn main() -> std::process::ExitCode {
    load_dotenv();
    let log_format = match LogFormat::from_env() {
        Ok(format) => format,
        Err(e) => {
            eprintln!("adaptive-engine: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Before the runtime: the OTLP exporter's HTTP client must not be made (or dropped)
    // inside it.
    let telemetry = match init_logging(log_format) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("adaptive-engine: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(cli_main()),
        Err(e) => {
            eprintln!("adaptive-engine: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    };
    drop(telemetry);
    code
}

async fn cli_main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `simulate --bank FILE` without --scaling-constant takes the file's, when it states one.
    if let Some(Command::Simulate(options)) = &mut cli.command {
        let explicit = matches
            .subcommand_matches("simulate")
            .and_then(|m| m.value_source("scaling_constant"))
            .is_some_and(|source| source != ValueSource::DefaultValue);
        if !explicit {
            if let Some(stated) = options.bank.as_deref().and_then(stated_scaling_constant) {
                options.scaling_constant = stated;
            }
        }
    }
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("adaptive-engine: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The `scalingConstant` a bank file states, if it can be read and states one (errors are
/// left to the command, which reads the file again).
fn stated_scaling_constant(path: &Path) -> Option<f64> {
    let bytes = std::fs::read(path).ok()?;
    bank_file::parse_file(&bytes).ok()?.scaling_constant
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Schema = command {
        print!("{}", graphql::sdl());
        return Ok(());
    }
    if let Command::Simulate(options) = command {
        print!(
            "{}",
            simulate::render(&simulate::run(&options)?, options.json)
        );
        return Ok(());
    }
    let config = Config::from_env()?;
    match command {
        Command::Serve => {
            let app = app::build(&config).await?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let open_files = server::raise_open_files_limit();
            if (open_files as usize) < config.http.max_connections + 256 {
                tracing::warn!(
                    open_files,
                    max_connections = config.http.max_connections,
                    "the open-files limit is below MAX_CONNECTIONS: accept will fail first"
                );
            }
            tracing::info!("GraphiQL on http://{}/graphql", listener.local_addr()?);
            server::run(listener, app, server::shutdown_signal()).await?;
        }
        Command::Migrate => app::prepare_database(&config).await?,
        Command::Schema | Command::Simulate(_) => unreachable!("handled above"),
        Command::Token {
            role,
            sub,
            ttl_seconds,
        } => {
            let secret = config.jwt_secret.context(
                "JWT_SECRET is not set: a token signed with anything else would be refused",
            )?;
            println!(
                "{}",
                JwtKeys::new(secret.as_bytes()).mint(&sub, role, ttl_seconds)
            );
        }
        Command::ImportBank {
            file,
            name,
            scaling_constant,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let parsed = bank_file::parse_file(&bytes)?;
            let scaling_constant = match (scaling_constant, parsed.scaling_constant) {
                (Some(asked), Some(stated)) if asked != stated => anyhow::bail!(
                    "{} has scalingConstant {stated} but --scaling-constant is {asked}",
                    file.display()
                ),
                (asked, stated) => asked.or(stated).unwrap_or(1.0),
            };
            let items = parsed.items;
            let name = name.or(parsed.name).unwrap_or_else(|| {
                file.file_stem()
                    .map_or_else(|| "bank".into(), |s| s.to_string_lossy().into_owned())
            });
            if config.database_prepared_statements {
                app::prepare_database(&config).await?;
            }
            let pool =
                storage::db::Db::new(&config.database_url, 2, config.database_prepared_statements);
            let bank = exam::create_item_bank(
                &pool,
                exam::NewBank {
                    name,
                    scaling_constant,
                    items,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{} ({})", e, e.code()))?;
            println!("{}", bank.id);
            eprintln!(
                "created item bank {} {:?} with {} items",
                bank.id, bank.name, bank.item_count
            );
        }
        Command::Export {
            assessment,
            format,
            out,
        } => {
            app::install_crypto_provider();
            let mut conn = storage::db::establish(&config.database_url)
                .await
                .with_context(|| {
                    format!(
                        "cannot connect to Postgres at {}",
                        redact_url(&config.database_url)
                    )
                })?;
            if !config.database_prepared_statements {
                // Behind PgBouncer no statement may outlive the export's transaction.
                diesel_async::AsyncConnection::set_prepared_statement_cache_size(
                    &mut conn,
                    diesel::connection::CacheSize::Disabled,
                );
            }
            let summary = match &out {
                Some(path) => export::export_to_file(&mut conn, assessment, format, path).await?,
                None => {
                    let stdout = std::io::BufWriter::new(std::io::stdout());
                    let (mut stdout, summary) =
                        export::export(&mut conn, assessment, format, stdout).await?;
                    stdout.flush()?;
                    summary
                }
            };
            eprintln!(
                "exported {} answers of {} exams of assessment {assessment}{}",
                summary.attempts,
                summary.exams,
                out.map(|p| format!(" to {}", p.display()))
                    .unwrap_or_default()
            );
        }
        Command::Calibrate {
            bank,
            method,
            model,
            min_responses,
        } => {
            use adaptive_engine::irt::{CalibrationMethod, CalibrationModel};
            app::install_crypto_provider();
            let db =
                storage::db::Db::new(&config.database_url, 2, config.database_prepared_statements);
            let method = match method {
                CliMethod::FixedTheta => CalibrationMethod::FixedTheta,
                CliMethod::Oem => CalibrationMethod::Oem,
                CliMethod::Mem => CalibrationMethod::Mem,
            };
            let model = match model {
                CliModel::TwoPl => CalibrationModel::TwoPl,
                CliModel::ThreePl => CalibrationModel::ThreePl,
            };
            let failed =
                |e: adaptive_engine::error::AppError| anyhow::anyhow!("{e} ({})", e.code());
            let run = exam::calibration::start_run(
                &db,
                adaptive_engine::ids::BankId(bank),
                method,
                model,
                min_responses,
                "cli",
            )
            .await
            .map_err(failed)?;
            let run = exam::calibration::run_calibration(&db, run)
                .await
                .map_err(failed)?;
            println!(
                "{}",
                serde_json::json!({
                    "id": run.id.to_string(),
                    "itemBankId": run.item_bank_id.to_string(),
                    "method": run.method,
                    "model": run.model,
                    "status": run.status.as_str(),
                    "cycles": run.cycles,
                    "error": run.error,
                    "items": run.items,
                })
            );
            if run.error.is_some() {
                anyhow::bail!("calibration run {} failed", run.id);
            }
        }
    }
    Ok(())
}
