//! The `adaptive-engine` command line: `serve` (default), `migrate`, `schema`, `token`,
//! `import-bank`, `simulate`. Parses arguments and hands over to the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use adaptive_engine::auth::{JwtKeys, Role};
use adaptive_engine::config::Config;
use adaptive_engine::{app, bank_file, exam, graphql, server, simulate, storage};

/// mimalloc instead of the system allocator: glibc malloc/free were ~13 % of the server's
/// CPU under load (README "Performance"), and simulation allocates per examinee too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Computerized adaptive testing service: IRT engine, GraphQL API, Postgres + Redis.
///
/// Configuration comes from the environment (and a `.env` file in the working
/// directory): DATABASE_URL, REDIS_URL (or REDIS_HOST/PORT/DB/PASSWORD), REDIS_KEY_PREFIX,
/// ENGINE_STATE_TTL_SECONDS, JWT_SECRET, HOST, PORT. See the README for the full table.
#[derive(Parser)]
#[command(name = "adaptive-engine", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default): creates and migrates the database if needed, then
    /// serves GraphQL on http://HOST:PORT/graphql (GraphiQL in a browser).
    Serve,
    /// Create the database if missing and apply pending migrations, then exit.
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
    /// Create an item bank from a file: a JSON list of ItemInput objects, or CSV with the
    /// columns externalId,a,b,c,d,contentArea,content,answerKey. Prints the new bank id.
    ImportBank {
        /// The JSON or CSV file.
        file: PathBuf,
        /// The bank's name (default: the file name without extension).
        #[arg(long)]
        name: Option<String>,
        /// The scaling constant D of the logistic model.
        #[arg(long, default_value_t = 1.0)]
        scaling_constant: f64,
    },
    /// Simulate examinees taking adaptive exams on the engine that serves them (no database,
    /// no Redis): recovery of the true abilities, test length and item exposure of a design.
    /// With no arguments: 1000 N(0, 1) examinees, 20-item MAX_INFO/EAP exams on a built-in
    /// bank of 500 3PL items.
    Simulate(Box<simulate::Options>),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = dotenvy::dotenv();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("adaptive-engine: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
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
            let items = bank_file::parse(&bytes)?;
            let name = name.unwrap_or_else(|| {
                file.file_stem()
                    .map_or_else(|| "bank".into(), |s| s.to_string_lossy().into_owned())
            });
            app::prepare_database(&config).await?;
            let pool = storage::db::pool(&config.database_url, 2);
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
    }
    Ok(())
}
