#!/usr/bin/env bash
# Installs the Debian packages dancewire needs (idempotent). Runs as root, or through sudo.
#   runtime: libportaudio2 (sounddevice)
#   tests:   pulseaudio + alsa-utils (virtual microphone), chromium + chromium-driver (dashboard
#            test in a real browser), postgresql (store tests against a real server)
set -euo pipefail
packages=(python3-venv libportaudio2 pulseaudio pulseaudio-utils alsa-utils chromium chromium-driver
          postgresql fonts-dejavu-core ca-certificates)
[ "${1:-}" = "--runtime" ] && packages=(python3-venv libportaudio2 ca-certificates)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing system packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
