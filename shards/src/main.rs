//! `varan`: the mail server and its administrative commands.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "varan", version, about = "Varan mail server", long_about = None)]
struct Cli {
    /// Configuration file. Without it: /etc/varan/varan.toml, then
    /// ~/varan.toml, which is created on first run.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Write a ready single-node installation into DIR.
    Quickstart {
        dir: PathBuf,
        /// Mail domain to serve.
        #[arg(long, default_value = "example.test")]
        domain: String,
        /// Add this to every standard port (25 → BASE+25, ...).
        #[arg(long)]
        port_base: Option<u16>,
        /// Address the listeners bind to.
        #[arg(long, default_value = "0.0.0.0")]
        listen: std::net::IpAddr,
    },
    /// Manage users of the JSON user databases.
    #[command(subcommand)]
    User(UserCommand),
    /// DKIM keys for signing outgoing mail.
    #[command(subcommand)]
    Dkim(DkimCommand),
    /// Inspect and manage the outbound queue (also while the server runs).
    #[command(subcommand)]
    Queue(QueueCommand),
    /// List, add or lift bans of client IPs (also while the server runs).
    #[command(subcommand)]
    Ban(BanCommand),
    /// Print the effective configuration with secrets masked.
    Dump,
}

#[derive(Subcommand)]
enum DkimCommand {
    /// Create a signing key for a served domain and print its DNS record.
    Generate {
        domain: String,
        /// Selector (default: dkim.selector from the configuration).
        #[arg(long)]
        selector: Option<String>,
        /// Key type: rsa (2048 bits), rsa4096 or ed25519.
        #[arg(long = "type", default_value = "rsa")]
        key_type: varan_storage::dkim::Algorithm,
        /// Replace an existing key (its old DNS record stops verifying).
        #[arg(long)]
        force: bool,
    },
    /// Print the DNS record of an existing key.
    Show {
        domain: String,
        #[arg(long)]
        selector: Option<String>,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Totals: new, deferred, bytes.
    Summary,
    /// Every entry: id, state, size, sender, queued at, next attempt, recipients and last errors.
    List,
    /// One entry in full.
    Show { id: String },
    /// Make an entry (or with --all every entry) due now.
    Retry {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Delete an entry without a bounce (or every deferred one, or all).
    Delete {
        #[arg(required_unless_present_any = ["deferred", "all"], conflicts_with_all = ["deferred", "all"])]
        id: Option<String>,
        /// Every entry that has been tried at least once.
        #[arg(long, conflicts_with = "all")]
        deferred: bool,
        /// Every entry (clears the queue).
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum BanCommand {
    /// Active bans: IP, end, minutes left, reason (failures or manual).
    List,
    /// Ban an IP (refused for protection.lists.ip_allow addresses).
    Add {
        ip: String,
        /// Length of the ban (default: protection.auth.ban_time).
        #[arg(long)]
        minutes: Option<u64>,
    },
    /// Lift the ban of an IP and forget its failed logins.
    Del { ip: String },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user.
    Add(UserAdd),
    /// Delete a user (the mailbox files stay).
    Del { email: String },
    /// Set a user's password.
    Passwd {
        email: String,
        #[arg(long)]
        password: String,
    },
    /// List users.
    List,
}

#[derive(Args)]
struct UserAdd {
    email: String,
    #[arg(long)]
    password: String,
    /// Quota in MB; the domain default when omitted.
    #[arg(long)]
    quota: Option<u64>,
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VARAN_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    // journald adds its own timestamps; keep lines short and uncoloured there.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).with_target(false);
    if journald {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn config_path(cli: &Cli) -> Result<PathBuf, String> {
    if let Some(p) = &cli.config {
        return Ok(p.clone());
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match varan_admin::firstrun::locate_or_create(home.as_deref()).map_err(|e| e.to_string())? {
        varan_admin::firstrun::Found::Existing(p) => Ok(p),
        varan_admin::firstrun::Found::Created(p) => {
            eprintln!("No configuration found; wrote {} with a generated admin password. Edit it, then start again if needed.", p.display());
            Ok(p)
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match &cli.command {
        Some(Command::Quickstart { dir, domain, port_base, listen }) => {
            let opts = varan_admin::quickstart::QuickstartOptions { dir: dir.clone(), domain: domain.clone(), port_base: *port_base, listen_ip: *listen };
            let report = varan_admin::quickstart::quickstart(&opts).map_err(|e| e.to_string())?;
            let exe = std::env::args().next().unwrap_or_else(|| "varan".into());
            print!("{}", varan_admin::quickstart::describe(&report, &exe));
            Ok(())
        }
        Some(Command::User(cmd)) => {
            let config = varan_admin::load_config(&config_path(&cli)?).map_err(|e| e.to_string())?;
            let r = match cmd {
                UserCommand::Add(a) => varan_admin::users::add(&config, &a.email, &a.password, a.quota),
                UserCommand::Del { email } => varan_admin::users::delete(&config, email),
                UserCommand::Passwd { email, password } => varan_admin::users::set_password(&config, email, password),
                UserCommand::List => varan_admin::users::list(&config).map(|users| {
                    for u in users {
                        println!("{u}");
                    }
                }),
            };
            r.map_err(|e| e.to_string())
        }
        Some(Command::Dkim(cmd)) => {
            let config = varan_admin::load_config(&config_path(&cli)?).map_err(|e| e.to_string())?;
            let (key, selector) = match cmd {
                DkimCommand::Generate { domain, selector, key_type, force } => (varan_admin::dkim::generate(&config, domain, selector.as_deref(), *key_type, *force), selector),
                DkimCommand::Show { domain, selector } => (varan_admin::dkim::show(&config, domain, selector.as_deref()), selector),
            };
            let key = key.map_err(|e| e.to_string())?;
            print!("{}", varan_admin::dkim::describe(&key, &config, selector.as_deref()));
            Ok(())
        }
        Some(Command::Queue(cmd)) => {
            let config = varan_admin::load_config(&config_path(&cli)?).map_err(|e| e.to_string())?;
            queue_command(&config, cmd).map_err(|e| e.to_string())
        }
        Some(Command::Ban(cmd)) => {
            let config = varan_admin::load_config(&config_path(&cli)?).map_err(|e| e.to_string())?;
            ban_command(&config, cmd).map_err(|e| e.to_string())
        }
        Some(Command::Dump) => {
            let config = varan_admin::load_config(&config_path(&cli)?).map_err(|e| e.to_string())?;
            print!("{}", config.to_toml_masked());
            Ok(())
        }
        None => {
            let path = config_path(&cli)?;
            let config = varan_admin::load_config(&path).map_err(|e| e.to_string())?;
            init_logging(&config.server.log_level);
            tracing::info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "starting");
            varan_shards::server::run(&path, config)
        }
    }
}

fn queue_command(config: &varan_core::config::Config, cmd: &QueueCommand) -> Result<(), varan_admin::AdminError> {
    use varan_admin::queue;
    let q = queue::open(config)?;
    match cmd {
        QueueCommand::Summary => print!("{}", queue::summary(&q)?),
        QueueCommand::List => print!("{}", queue::list(&q)?),
        QueueCommand::Show { id } => print!("{}", queue::show(&q, queue::parse_id(id)?)?),
        QueueCommand::Retry { id: Some(id), .. } => queue::retry(&q, queue::parse_id(id)?)?,
        QueueCommand::Retry { id: None, .. } => println!("{} entries due now", queue::retry_all(&q)?),
        QueueCommand::Delete { id: Some(id), .. } => queue::delete(&q, queue::parse_id(id)?)?,
        QueueCommand::Delete { deferred: true, .. } => println!("{} deferred entries deleted", queue::delete_deferred(&q)?),
        QueueCommand::Delete { .. } => println!("{} entries deleted", queue::delete_all(&q)?),
    }
    Ok(())
}

fn ban_command(config: &varan_core::config::Config, cmd: &BanCommand) -> Result<(), varan_admin::AdminError> {
    use varan_admin::bans;
    match cmd {
        BanCommand::List => print!("{}", bans::list(config)?),
        BanCommand::Add { ip, minutes } => {
            let ip = bans::parse_ip(ip)?;
            let until = bans::add(config, ip, *minutes)?;
            println!("{ip} banned until {} (a running server applies it within a second)", varan_core::datetime::rfc5322(i64::try_from(until).unwrap_or(i64::MAX)));
        }
        BanCommand::Del { ip } => {
            let ip = bans::parse_ip(ip)?;
            let was = bans::del(config, ip)?;
            println!("{ip} {} (a running server applies it within a second)", if was { "unbanned" } else { "was not banned; its failed logins are forgotten" });
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("varan: {e}");
            ExitCode::FAILURE
        }
    }
}
