# Sourced by scripts that run cargo as root (sudo scripts/test.sh): finds the
# Rust toolchain of the user who ran sudo. sudo resets PATH and HOME, so that
# user's ~/.cargo/bin is not on PATH, and its rustup proxies would look for
# toolchains in root's ~/.rustup ("rustup could not choose a version of cargo
# to run"): RUSTUP_HOME and CARGO_HOME follow that user's home unless set or
# root has a toolchain of its own.
rust_env() {
    local home
    for home in "$HOME" "${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)}"; do
        [ -n "$home" ] && [ -d "$home/.cargo/bin" ] || continue
        PATH="$home/.cargo/bin:$PATH"
        if [ "$home" != "$HOME" ] && [ ! -d "$HOME/.rustup" ]; then
            [ -d "$home/.rustup" ] && export RUSTUP_HOME="${RUSTUP_HOME:-$home/.rustup}"
            export CARGO_HOME="${CARGO_HOME:-$home/.cargo}"
        fi
    done
    export PATH
}
rust_env
