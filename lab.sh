#!/usr/bin/env bash
# Runs the lab (every experiment, report in report/index.html), installing the
# Fashion-MNIST package first when it is missing. Extra arguments go to `batchnorm lab`,
# e.g. `./lab.sh --quick` or `./lab.sh paper-fig1 --out /tmp/r`.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  echo "Fashion-MNIST is missing: installing the Debian package dataset-fashion-mnist" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist
fi
exec cargo run --release --quiet -- lab "$@"
