# Sourced by the scripts that install Debian packages (setup.sh, docker.sh,
# bench.sh): need_pkgs WHO PKG... installs those of PKG... that are missing
# (apt-get, no recommends), saying so as "WHO: installing ..."; returns
# apt-get's status (0 when nothing was missing).
need_pkgs() {
    local who=$1 missing=() p
    shift
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    echo "$who: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
