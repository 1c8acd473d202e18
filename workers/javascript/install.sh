#!/bin/sh
# Install the npm packages of the JavaScript worker and of its example app, each only when its
# node_modules is missing or older than its package.json / package-lock.json (or, for the
# example, than the worker's own files, which npm copies into it). Needs node >= 18 and npm,
# and the npm registry reachable the first time. Safe to run again: it does nothing when all
# is up to date. Usage: workers/javascript/install.sh
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
worker="$root/workers/javascript"
example="$root/examples/javascript"

for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "install.sh: $tool is not installed: install Node.js >= 18 and npm (Debian: apt-get install nodejs npm)" >&2
        exit 1
    }
done
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' || {
    echo "install.sh: node $(node --version) is too old: cocaine-worker needs node >= 18" >&2
    exit 1
}

# One install at a time (test runs in one tree may start this together): the second waits,
# then finds everything up to date.
if command -v flock >/dev/null 2>&1; then
    exec 9>"${TMPDIR:-/tmp}/cocaine-javascript-install.lock"
    flock -w 600 9 || { echo "install.sh: another install still runs after 600 s" >&2; exit 1; }
fi

# stale FOLDER [FILES...]: whether FOLDER/node_modules is missing or older than a file given.
stale() {
    stamp="$1/node_modules/.package-lock.json"
    shift
    [ -f "$stamp" ] || return 0
    [ -n "$(find "$@" -newer "$stamp" -print 2>/dev/null | head -n 1)" ]
}

install() {
    echo "install.sh: npm ci in ${1#"$root"/}" >&2
    (cd "$1" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$1/node_modules/.package-lock.json"
}

if stale "$worker" "$worker/package.json" "$worker/package-lock.json"; then
    install "$worker"
fi
if stale "$example" "$example/package.json" "$example/package-lock.json" "$example/.npmrc" \
        "$worker/package.json" "$worker/lib" "$worker/README.md"; then
    install "$example"
fi
