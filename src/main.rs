use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    println!("ctgate {}", env!("CARGO_PKG_VERSION"));
}
