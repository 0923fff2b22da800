//! `ctgate`: the appliance binary (run, check-config, ...). Errors reach the
//! user as one line saying what is wrong and what to do.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use appliance::dpdk::huge::HugeAlloc;
use appliance::{Config, RunOptions};
use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;

mod client;
mod replay;

#[global_allocator]
static GLOBAL: HugeAlloc<MiMalloc> = HugeAlloc(MiMalloc);

const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("CTGATE_GIT_REV"),
    ", built against DPDK ",
    env!("CTGATE_DPDK_VERSION"),
    ")"
);

#[derive(Parser, Debug)]
#[command(name = "ctgate", version = VERSION, about = "DPDK connection tracking and NAT appliance")]
struct Cli {
    /// Log filter (tracing-subscriber EnvFilter syntax), e.g. "info" or "appliance=debug".
    #[arg(long, global = true, env = "CTGATE_LOG", default_value = "info")]
    log: String,
    /// Log line format: text, or json (one JSON object per line, for log collectors).
    #[arg(
        long,
        global = true,
        env = "CTGATE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// The subcommands. Add one by adding a variant and a match arm in `main`.
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the appliance until SIGINT / SIGTERM (or --duration).
    Run {
        /// Config file (TOML). Without it: the built-in test bed config (`ctgate default-config`).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Stop by itself after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Print a stats line every this many seconds.
        #[arg(long)]
        stats_interval: Option<f64>,
        /// Write the final counters as JSON to this file.
        #[arg(long)]
        stats_json: Option<PathBuf>,
        /// Print the ports' non-zero extended statistics at the end.
        #[arg(long)]
        xstats: bool,
        /// Count the cycles each stage of the workers' loop takes (rx,
        /// classify, the conntrack stages, forward, tx): printed at the end
        /// per packet, and in the stats JSON and metrics. Costs a few TSC
        /// reads per burst.
        #[arg(long)]
        profile_stages: bool,
    },
    /// Check a config file and print what it configures.
    CheckConfig {
        /// Config file (TOML).
        file: PathBuf,
    },
    /// Print the built-in default config (ctgate between the netns test bed's hosts).
    DefaultConfig,
    /// Run the engine offline over captures (no DPDK): the final table in
    /// `conntrack -L -o extended` format on stdout, counters on stderr.
    Replay(replay::ReplayArgs),
    /// The connection table of a running ctgate, through its REST API:
    /// list, count, delete, flush, events (like conntrack -L/-C/-D/-F/-E).
    Ct(Box<client::CtArgs>),
    /// The counters of a running ctgate, through its REST API.
    Stats(client::StatsArgs),
    /// State sync with an HA peer: status, its external cache, takeover,
    /// resync (like conntrackd -s / -e / -c / -n).
    Ha(client::HaArgs),
}

fn load(config: Option<&PathBuf>) -> anyhow::Result<Config> {
    match config {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::testbed_default()),
    }
}

fn seconds(v: Option<f64>, what: &str) -> anyhow::Result<Option<Duration>> {
    v.map(|s| {
        Duration::try_from_secs_f64(s)
            .with_context(|| format!("{what} must be a non-negative number of seconds"))
    })
    .transpose()
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            config,
            duration,
            stats_interval,
            stats_json,
            xstats,
            profile_stages,
        } => {
            let cfg = load(config.as_ref())?;
            let opts = RunOptions {
                duration: seconds(duration, "--duration")?,
                stats_interval: seconds(stats_interval, "--stats-interval")?,
                stats_json,
                xstats,
                profile_stages,
            };
            let report = appliance::run(&cfg, &opts)?;
            println!("{}", report.render(&cfg));
            Ok(())
        }
        Command::CheckConfig { file } => {
            let cfg = Config::load(&file)?;
            println!("{}: OK", file.display());
            println!(
                "  lcores: main {}, workers {:?}; mempool {} mbufs",
                cfg.main_lcore, cfg.workers, cfg.mempool_mbufs
            );
            for p in &cfg.ports {
                let addrs: Vec<String> = [p.ipv4, p.ipv6]
                    .iter()
                    .flatten()
                    .map(|a| a.to_string())
                    .collect();
                match (&p.parent, p.vlan) {
                    (Some(parent), Some(vlan)) => println!(
                        "  port {}: vlan {vlan} on {parent} [{}]",
                        p.name,
                        addrs.join(", ")
                    ),
                    _ => println!("  port {}: {} [{}]", p.name, p.devargs, addrs.join(", ")),
                }
            }
            for r in &cfg.routes {
                match r.via {
                    Some(v) => println!("  route {} via {} port {}", r.prefix, v, r.port),
                    None => println!("  route {} port {}", r.prefix, r.port),
                }
            }
            for n in &cfg.neighbours {
                println!("  neighbour {} lladdr {} port {}", n.ip, n.mac, n.port);
            }
            println!("  EAL: {}", cfg.eal_argv().join(" "));
            Ok(())
        }
        Command::DefaultConfig => {
            print!("{}", appliance::config::TESTBED_DEFAULT);
            Ok(())
        }
        Command::Replay(args) => replay::run(args),
        Command::Ct(args) => client::ct(*args),
        Command::Stats(args) => client::stats(args),
        Command::Ha(args) => client::ha(args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match cli.log_format {
        LogFormat::Json => fmt.json().init(),
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes, joined.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("ctgate: error: {}", msg.join(": "));
            ExitCode::FAILURE
        }
    }
}
