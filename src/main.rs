use clap::{Parser, Subcommand};
use mimalloc::MiMalloc;

mod pcap;
mod replay;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "ctgate",
    version,
    about = "DPDK connection tracking and NAT appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine offline over captures and print the final table.
    Replay(replay::ReplayArgs),
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Replay(a) => replay::run(a),
    };
    if let Err(e) = res {
        eprintln!("ctgate: {e:#}");
        std::process::exit(1);
    }
}
