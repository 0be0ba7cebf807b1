#!/bin/sh
# Installs Debian's Chromium (with an emoji font for the page icons and Noto CJK, without
# which Chinese, Japanese and Korean LoRA names render as empty boxes in the browser and in
# PDF case files) for the headless browser test, Pango for WeasyPrint's PDF case files and
# poppler-utils (pdftoppm, pdftotext, pdfdetach) for the case-file tests; needs root or sudo.
set -e
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-noto-color-emoji fonts-noto-cjk >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libpango-1.0-0 libpangoft2-1.0-0 poppler-utils >/dev/null
command -v chromium
command -v pdftoppm
fc-list :lang=zh family | grep -q "Noto Sans CJK"
