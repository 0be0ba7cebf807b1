#!/bin/sh
# Installs Debian's HAProxy, the reverse proxy of `make serve` (several Streamlit processes behind
# one port, carlos/serving) and of its browser test; needs root or sudo. Only the program is used:
# carlos starts it as a foreground child with its own generated configuration, so the system
# service that the package enables is stopped and disabled where systemd runs.
set -e
if command -v haproxy >/dev/null 2>&1; then command -v haproxy; exit 0; fi
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq haproxy >/dev/null
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now haproxy >/dev/null 2>&1 || true
fi
command -v haproxy
