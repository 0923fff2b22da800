//! Generates bindings to the system DPDK and compiles the C shim, both with the
//! compiler flags `pkg-config --cflags libdpdk` gives (they include
//! `-march=corei7`, which DPDK's headers require).

use std::env;
use std::path::PathBuf;

const MIN_DPDK: &str = "22.11";

#[derive(Debug)]
struct U64Macros;

impl bindgen::callbacks::ParseCallbacks for U64Macros {
    fn int_macro(&self, name: &str, _value: i64) -> Option<bindgen::callbacks::IntKind> {
        // Offload and RSS flags are 64-bit masks built with RTE_BIT64; type them
        // all as u64 so they combine with the u64 fields of rte_eth_conf.
        if name.starts_with("RTE_ETH_RX_OFFLOAD_")
            || name.starts_with("RTE_ETH_TX_OFFLOAD_")
            || name.starts_with("RTE_ETH_RSS_")
            || name.starts_with("RTE_MBUF_F_")
        {
            Some(bindgen::callbacks::IntKind::U64)
        } else {
            None
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=shim/ct_shim.c");
    println!("cargo:rerun-if-changed=shim/ct_shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = match pkg_config::Config::new()
        .atleast_version(MIN_DPDK)
        .cargo_metadata(true)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!(
                "error: DPDK >= {MIN_DPDK} not found through pkg-config (libdpdk): install it with `sudo scripts/setup.sh` \
                 (Debian: apt-get install libdpdk-dev dpdk-dev pkg-config libclang-dev). Details: {e}"
            );
            std::process::exit(1);
        }
    };
    println!("cargo:version={}", lib.version);
    println!("cargo:rustc-env=DPDK_PKG_VERSION={}", lib.version);

    let cflags: Vec<String> = {
        let out = std::process::Command::new("pkg-config")
            .args(["--cflags", "libdpdk"])
            .output()
            .expect("pkg-config ran a moment ago");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };

    let mut build = cc::Build::new();
    build
        .file("shim/ct_shim.c")
        .include("shim")
        .opt_level(3)
        .warnings(false);
    for flag in &cflags {
        build.flag(flag);
    }
    build.compile("ct_shim");

    let bindings = bindgen::Builder::default()
        .header("shim/ct_shim.h")
        .clang_args(&cflags)
        .clang_arg("-Ishim")
        .clang_macro_fallback()
        .parse_callbacks(Box::new(U64Macros))
        .allowlist_function("rte_.*")
        .allowlist_function("ct_shim_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .derive_debug(false)
        .derive_default(true)
        .no_debug("rte_flow_item_gtp_psc")
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .generate()
        .unwrap_or_else(|e| {
            eprintln!("error: bindgen failed on the DPDK headers (is libclang-dev installed? scripts/setup.sh): {e}");
            std::process::exit(1);
        });
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("OUT_DIR is writable");
}
