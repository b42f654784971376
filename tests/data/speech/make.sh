#!/bin/sh
# Regenerates speech-8k.s16: a few seconds of synthetic speech (a male and a female
# espeak-ng voice) as 8 kHz 16-bit signed little-endian mono, headerless, at about
# -20 dBm0. The DTMF detector's tests assert that no digit is found in it.
# Needs espeak-ng and sox (Debian: apt-get install espeak-ng sox).
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
espeak-ng -v en -s 150 -w "$tmp/a.wav" \
  "Please enter your account number, followed by the pound key. One, two, three, nine."
espeak-ng -v en+f3 -p 70 -s 160 -w "$tmp/b.wav" \
  "Thank you. Your call is important to us. Press star to return to the main menu."
sox "$tmp/a.wav" "$tmp/b.wav" -r 8000 -c 1 -b 16 -e signed-integer -L -t raw speech-8k.s16 \
  norm -10
