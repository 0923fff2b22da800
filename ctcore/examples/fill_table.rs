//! Fills a table to see how inserts fare at scale: counts of each failure.
use ctcore::conn::Conn;
use ctcore::table::{Clash, InsertError, Table};
use ctcore::tuple::{Addr, Family, Tuple};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4_000_000);
    let t = Table::new(n + n / 8, 1, 0x000b_e7c4);
    let (mut full, mut clash) = (0, 0);
    for i in 0..n {
        let o = Tuple {
            src: Addr::from_v4([192, 0, 2, (i % 250) as u8 + 1]),
            dst: Addr::from_v4([198, 51, 100, ((i / 250) % 250) as u8 + 1]),
            src_port: 1024 + (i / 62_500) as u16,
            dst_port: 80,
            proto: 17,
            family: Family::V4,
            zone: 0,
        };
        let c = Conn {
            tuples: [o, o.invert().unwrap()],
            deadline_ms: 1,
            ..Conn::default()
        };
        match t
            .guard()
            .insert(&c, Clash::Both, false, &mut Default::default())
        {
            Ok(_) => {}
            Err(InsertError::Full) => full += 1,
            Err(InsertError::Clash) => clash += 1,
        }
    }
    println!(
        "{} inserted, {full} full, {clash} clash, {} stripes, {} bytes/conn",
        t.len(),
        t.stripe_count(),
        t.bytes_per_conn()
    );
}
