#!/bin/sh
# Regenerates the sample sounds in this folder (needs sox). Kept tiny: they are in git.
# beep.wav:  1 s of 440 Hz, 8 kHz mono 16-bit WAV (the rate of G.711 legs)
# beep.flac: the same tone at 16 kHz in FLAC (proves the compressed path and resampling)
# A 10 ms fade at each end keeps the beep from clicking.
set -eu
cd "$(dirname "$0")"
sox -D -n -r 8000 -c 1 -b 16 beep.wav synth 1 sine 440 gain -6 fade q 0.01 1 0.01
sox -D -n -r 16000 -c 1 -b 16 beep.flac synth 1 sine 440 gain -6 fade q 0.01 1 0.01
