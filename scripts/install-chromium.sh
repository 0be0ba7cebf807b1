#!/bin/sh
# Installs Debian's Chromium (and an emoji font for the page icons) for the headless
# browser test; needs root or sudo.
set -e
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null
command -v chromium
