#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the build and the tests
# need (libopus for the Opus codec, SIPp from `sip-tester`, PostgreSQL prepared for the
# store tests, baresip and sox for the audio tests, iptables for the NAT test, arping for
# the cluster's floating IPs, tzdata for the dialplan's time zones, Chromium and
# chromedriver for the web panel's browser test), then checks formatting, lints and runs
# every test. Run as root (apt-get, pg_hba.conf). `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists opus 2>/dev/null || need+=(libopus-dev)
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
command -v sox >/dev/null 2>&1 || need+=(sox)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
# A node that takes a floating IP over announces it with gratuitous ARP (the cluster test's
# phones still hold the dead holder's MAC otherwise).
command -v arping >/dev/null 2>&1 || need+=(iputils-arping)
# The HTTPS test makes its certificate with openssl.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The dialplan's time sets read zone rules from the system (tzdata).
[ -e /usr/share/zoneinfo/Europe/Berlin ] || need+=(tzdata)
# The panel's browser test drives headless Chromium through chromedriver (WebDriver).
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi

scripts/pg-test-setup.sh

echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
echo "test.sh: cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "test.sh: cargo test"
# The integration tests mostly wait on real nodes and SIPp processes, so more threads
# than cores keep the 2-core CI machine busy without starving them.
cargo test --locked --all-targets -- --test-threads="${RINGFORT_TEST_THREADS:-4}"
echo "test.sh: all tests passed"
