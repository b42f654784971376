#!/bin/sh
# Regenerates the sounds in this folder: the English prompt set (espeak-ng + sox), the
# music on hold (sox) and the test beeps (sox). Everything here is in git; run this after
# changing a text, the voice or the processing, and commit the result.
#
#   sounds/make.sh               regenerate everything
#   sounds/make.sh NAME...       regenerate only these (e.g. vm/new digits/7 moh/default)
#   sounds/make.sh --check       list missing or malformed files; exit 1 if any
#   sounds/make.sh --report      print name, duration, peak and RMS of every file
#   sounds/make.sh --list        print the prompt list (name and text)
#
# Needs espeak-ng and sox (Debian packages espeak-ng, sox). The output is deterministic:
# the same texts, voice and tool versions give byte-identical files.
#
# Prompts: 16 kHz mono 16-bit PCM (wideband for G.722/Opus legs; the player downsamples
# once for G.711 legs) in FLAC: lossless, and half the size of WAV, which keeps the set
# small enough for git. Every file of the set is NAME.flac, so a name's file never
# changes with the length of its text. Each prompt is trimmed of espeak's own silence,
# gently compressed (2:1 above -24 dBFS, so quiet and loud words sit closer), peak-
# normalized to $PEAK_DB dBFS (speech RMS lands near -20 dBFS), faded in and out over
# 10 ms (no clicks) and padded with $PAD_S s of silence at each end. Prompts are played
# back to back ("you have" "3" "new" "messages"): the gap between two is 2 x $PAD_S.
set -eu

# ---- Voice: change these (or set them in the environment) to swap the voice. ---------
# VOICE is any `espeak-ng --voices=en` name or file, with an optional variant
# (`en-us+f3`, `en-gb+m2`); with the mbrola package and a voice such as mbrola-us1
# installed, `mb-us1` works too.
VOICE=${VOICE:-en-us}
SPEED=${SPEED:-150}      # words per minute (espeak-ng -s); 140-160 suits a phone
PITCH=${PITCH:-45}       # 0-99 (espeak-ng -p); 50 is the voice's own
WORDGAP=${WORDGAP:-1}    # extra pause between words, in 10 ms units (espeak-ng -g)
# ---- Processing. ---------------------------------------------------------------------
OUT_RATE=16000           # Hz
EXT=flac                 # flac or wav (the player reads both; apps name the file)
PEAK_DB=-3               # peak level of every prompt, dBFS
PAD_S=0.05               # silence kept at each end of a prompt, s
FADE_S=0.01              # fade in and out, s
MOH_RMS_DB=-24           # RMS level of the music on hold, dBFS

# The output's compression level (sox -C): FLAC's best; none for WAV.
if [ "$EXT" = flac ]; then COMPRESSION='-C 8'; else COMPRESSION=; fi

# ---- The prompts: one per line, `name|text`. The name is the file's path under sounds/
# without the extension; the text is what espeak-ng says. A trailing comma keeps the
# voice up (the sentence goes on in the next prompt); a full stop lets it fall. Numerals
# are read as words by espeak-ng ("press 1" says "press one").
PROMPTS='
welcome|Welcome.
main-menu|For sales, press 1. For support, press 2. For the conference room, press 8. For reception, press 0. Or dial an extension now.
support-menu|For technical support, press 1. For billing, press 2. To go back, press star.
invalid|That is not a valid choice.
timeout|We did not receive your choice.
no-input|We did not receive your choice.
goodbye|Goodbye.
please-hold|Please hold.
transferring|Please hold while we transfer your call.
closed|Our office is closed. Our hours are Monday to Friday, 9 to 5.
not-available|The person you are calling is not available.
busy|The person you are calling is busy.
no-route|The number you have dialled is not in service.
invalid-number|The number you have dialled is not in service.
enter-extension|Please enter the extension number.
vm/greeting-unavailable|The person you are calling is not available. Please leave a message after the tone. When you are done, hang up or press pound.
vm/greeting-busy|The person you are calling is busy. Please leave a message after the tone. When you are done, hang up or press pound.
vm/person-at-extension|The person at extension,
vm/is-unavailable|is not available.
vm/is-busy|is busy.
vm/leave-message-after-tone|Please leave a message after the tone. When you are done, hang up or press pound.
vm/enter-mailbox|Please enter your mailbox number, followed by the pound key.
vm/enter-password|Please enter your password, followed by the pound key.
vm/login-incorrect|Login incorrect.
vm/you-have|You have,
vm/no|no
vm/new|new
vm/old|old
vm/and|and
vm/message|message
vm/messages|messages
vm/no-messages|You have no messages.
vm/message-number|Message number,
vm/first-message|First message.
vm/next-message|Next message.
vm/last-message|Last message.
vm/message-menu|To hear the previous message, press 4. To listen again, press 5. To delete, press 7. To save, press 9. For the next message, press pound. To return to the main menu, press star.
vm/main-menu|To listen to your messages, press 1. For mailbox options, press 0. To hang up, press star.
vm/saved|Message saved.
vm/deleted|Message deleted.
vm/record-greeting-after-tone|Please record your greeting after the tone. When you are done, press pound.
vm/greeting-saved|Your greeting has been saved.
vm/enter-new-password|Please enter your new password, followed by the pound key.
vm/password-changed|Your password has been changed.
vm/received|Received,
vm/from|from
vm/extension|extension
vm/unknown-caller|an unknown caller.
vm/message-saved|Your message has been saved. Goodbye.
vm/mailbox-options|To record your unavailable greeting, press 1. To record your busy greeting, press 2. To change your password, press 5. To go back, press star.
vm/reenter-password|Please enter your new password again, followed by the pound key.
vm/password-mismatch|The passwords do not match.
vm/no-more-messages|There are no more messages.
conf/enter-pin|Please enter the conference PIN, followed by the pound key.
conf/wrong-pin|That PIN is not correct.
conf/joined|You are now in the conference.
conf/only-person|You are the only person in this conference.
conf/there-are|There are,
conf/other-people|other people in this conference.
conf/muted|You are muted.
conf/unmuted|You are no longer muted.
conf/all-muted|All participants are now muted.
conf/locked|This conference is locked.
conf/unlocked|This conference is unlocked.
digits/0|zero
digits/1|one
digits/2|two
digits/3|three
digits/4|four
digits/5|five
digits/6|six
digits/7|seven
digits/8|eight
digits/9|nine
digits/10|ten
digits/11|eleven
digits/12|twelve
digits/13|thirteen
digits/14|fourteen
digits/15|fifteen
digits/16|sixteen
digits/17|seventeen
digits/18|eighteen
digits/19|nineteen
digits/20|twenty
digits/30|thirty
digits/40|forty
digits/50|fifty
digits/60|sixty
digits/70|seventy
digits/80|eighty
digits/90|ninety
digits/hundred|hundred
digits/thousand|thousand
digits/star|star
digits/pound|pound
digits/at|at
digits/am|a.m.
digits/pm|p.m.
digits/oh|oh
digits/today|today
digits/yesterday|yesterday
days/monday|Monday
days/tuesday|Tuesday
days/wednesday|Wednesday
days/thursday|Thursday
days/friday|Friday
days/saturday|Saturday
days/sunday|Sunday
months/january|January
months/february|February
months/march|March
months/april|April
months/may|May
months/june|June
months/july|July
months/august|August
months/september|September
months/october|October
months/november|November
months/december|December
ordinals/1|first
ordinals/2|second
ordinals/3|third
ordinals/4|fourth
ordinals/5|fifth
ordinals/6|sixth
ordinals/7|seventh
ordinals/8|eighth
ordinals/9|ninth
ordinals/10|tenth
ordinals/11|eleventh
ordinals/12|twelfth
ordinals/13|thirteenth
ordinals/14|fourteenth
ordinals/15|fifteenth
ordinals/16|sixteenth
ordinals/17|seventeenth
ordinals/18|eighteenth
ordinals/19|nineteenth
ordinals/20|twentieth
ordinals/30|thirtieth
'

# Files made by sox alone (not in PROMPTS).
OTHERS="moh/default.$EXT beep.wav beep.flac"

cd "$(dirname "$0")"

die() {
    echo "make.sh: $*" >&2
    exit 1
}

need() {
    missing=
    packages=
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 && continue
        missing="$missing $tool"
        case $tool in soxi) package=sox ;; *) package=$tool ;; esac
        case " $packages " in *" $package "*) ;; *) packages="$packages $package" ;; esac
    done
    [ -z "$missing" ] || die "not installed:$missing. On Debian: sudo apt-get install$packages"
}

# The prompt lines, without blank lines.
prompt_lines() {
    printf '%s\n' "$PROMPTS" | grep -v '^[[:space:]]*$'
}

# Every file the set must hold, one per line.
expected_files() {
    prompt_lines | cut -d'|' -f1 | sed "s/\$/.$EXT/"
    for f in $OTHERS; do
        echo "$f"
    done
}

# The text of prompt $1 (empty if it is not in the list).
text_of() {
    prompt_lines | awk -F'|' -v n="$1" '$1 == n { sub(/^[^|]*\|/, ""); print; exit }'
}

# `sox stats` value $2 ("Pk lev dB", "RMS lev dB", "Length s") of file $1.
stat_of() {
    sox "$1" -n stats 2>&1 | awk -v k="$2" 'index($0, k) == 1 { print $NF; exit }'
}

# Says prompt $1 with text $2 into $1.$EXT.
make_prompt() {
    name=$1
    text=$2
    mkdir -p "$(dirname "$name")"
    printf '%s' "$text" | espeak-ng -v "$VOICE" -s "$SPEED" -p "$PITCH" -g "$WORDGAP" -w "$tmp/say.wav" \
        || die "$name: espeak-ng failed (voice $VOICE)"
    # highpass: no DC or rumble; silence (both ends, through reverse): espeak's own lead-in
    # and tail; compand: 2:1 above -24 dBFS, 3 ms attack, 80 ms release, soft knee (after
    # a first norm, so it acts the same whatever the voice's own level); norm: the peak
    # level; fade: no click where the trimmed speech starts and ends; pad: the same short
    # silence around every prompt.
    # shellcheck disable=SC2086 # $COMPRESSION is empty or two words
    sox -D "$tmp/say.wav" -r "$OUT_RATE" -c 1 -b 16 $COMPRESSION "$name.$EXT" \
        highpass 60 \
        silence 1 0.005 -55d reverse silence 1 0.005 -55d reverse \
        rate -v "$OUT_RATE" \
        norm "$PEAK_DB" \
        compand 0.003,0.08 6:-40,-40,-24,-24,0,-12 0 -90 0.003 \
        norm "$PEAK_DB" \
        fade q "$FADE_S" reverse fade q "$FADE_S" reverse \
        pad "$PAD_S" "$PAD_S" \
        || die "$name: sox failed"
    [ -s "$name.$EXT" ] || die "$name: empty output"
}

# Music on hold: four soft seventh chords, 6 s each, that swell in and out and overlap,
# under a slow arpeggio of bell-like notes that die away, through a little reverb; 24 s
# that start and end in near silence, so the loop seam is a breath between two swells.
# Sine tones only, 196 to 784 Hz: no tone in the DTMF high group (1209 Hz and up), so no
# pair of them can pass for a key press, and all of them pass the narrowband (G.711) band.
# Each line: the chord's tones, then `/`, then its eight arpeggio notes (Hz).
MOH_CHORDS='
261.63 329.63 392.00 493.88 / 523.25 659.26 783.99 659.26 493.88 659.26 392.00 659.26
220.00 329.63 392.00 523.25 / 440.00 523.25 659.26 523.25 392.00 523.25 659.26 440.00
220.00 261.63 349.23 659.26 / 349.23 440.00 523.25 659.26 523.25 440.00 349.23 440.00
196.00 293.66 329.63 493.88 587.33 / 392.00 493.88 587.33 659.26 587.33 493.88 392.00 293.66
'

# A sine tone into $1: frequency $2, length $3 s, then sox effects.
tone() {
    out=$1
    freq=$2
    len=$3
    shift 3
    sox -D -n -r "$OUT_RATE" -c 1 -b 16 "$out" synth "$len" sine "$freq" "$@" \
        || die "moh/default: sox failed"
}

make_moh() {
    mkdir -p moh
    chord_s=6
    len_s=7.5    # each chord rings 1.5 s into the next
    note_s=0.75  # eight arpeggio notes per chord
    i=0
    parts=
    printf '%s\n' "$MOH_CHORDS" | grep -v '^[[:space:]]*$' >"$tmp/chords"
    while read -r line; do
        # The chord: its tones mixed at equal level, swelling in and out.
        tones=
        j=0
        for f in ${line%%/*}; do
            tone "$tmp/c$i-$j.wav" "$f" "$len_s"
            tones="$tones $tmp/c$i-$j.wav"
            j=$((j + 1))
        done
        # shellcheck disable=SC2086 # $tones is a list of files
        sox -D -m $tones "$tmp/chord$i.wav" tremolo 0.25 15 fade h 1.8 "$len_s" 3.5 \
            || die "moh/default: sox failed"
        # The arpeggio: notes struck softly (5 ms rise, no click) that fade away.
        notes=
        j=0
        for f in ${line#*/}; do
            tone "$tmp/n$i-$j.wav" "$f" "$note_s" fade q 0.005 "$note_s" 0.7
            notes="$notes $tmp/n$i-$j.wav"
            j=$((j + 1))
        done
        # shellcheck disable=SC2086 # $notes is a list of files
        sox -D $notes "$tmp/arp$i.wav" || die "moh/default: sox failed"
        # Chord and arpeggio (9 dB under it), placed at the chord's start.
        sox -D -m -v 1 "$tmp/chord$i.wav" -v 0.35 "$tmp/arp$i.wav" "$tmp/part$i.wav" \
            pad "$(awk -v i="$i" -v c="$chord_s" 'BEGIN { print i * c }')" \
            || die "moh/default: sox failed"
        parts="$parts $tmp/part$i.wav"
        i=$((i + 1))
    done <"$tmp/chords"
    total=$(awk -v n="$i" -v c="$chord_s" 'BEGIN { print n * c }')
    # shellcheck disable=SC2086 # $parts is a list of files
    sox -D -m $parts "$tmp/moh-mix.wav" lowpass 2500 reverb 40 50 70 \
        || die "moh/default: sox failed"
    # The last chord's tail and the reverb's would run past $total: fold the end into a
    # 1.5 s fade so the file ends in silence at exactly $total s.
    sox -D "$tmp/moh-mix.wav" "$tmp/moh-raw.wav" trim 0 "$total" fade q 0.5 "$total" 1.5 \
        || die "moh/default: sox failed"
    rms=$(stat_of "$tmp/moh-raw.wav" "RMS lev dB")
    gain=$(awk -v want="$MOH_RMS_DB" -v have="$rms" 'BEGIN { printf "%.2f", want - have }')
    # shellcheck disable=SC2086 # $COMPRESSION is empty or two words
    sox -D "$tmp/moh-raw.wav" -r "$OUT_RATE" -c 1 -b 16 $COMPRESSION "moh/default.$EXT" gain "$gain" \
        || die "moh/default: sox failed"
}

# Test beeps (used by the Rust tests; keep them as they are).
# beep.wav:  1 s of 440 Hz, 8 kHz mono 16-bit WAV (the rate of G.711 legs)
# beep.flac: the same tone at 16 kHz in FLAC (proves the compressed path and resampling)
# A 10 ms fade at each end keeps the beep from clicking.
make_beeps() {
    sox -D -n -r 8000 -c 1 -b 16 beep.wav synth 1 sine 440 gain -6 fade q 0.01 1 0.01
    sox -D -n -r 16000 -c 1 -b 16 beep.flac synth 1 sine 440 gain -6 fade q 0.01 1 0.01
}

# --check: every expected file is there, plays, and (for the WAVs we make) is 16 kHz
# mono, not clipped and not silent. Lists what is wrong; exit 1 if anything is.
check() {
    bad=0
    for f in $(expected_files); do
        if [ ! -s "$f" ]; then
            echo "missing: $f"
            bad=1
        fi
    done
    if ! command -v soxi >/dev/null 2>&1; then
        echo "make.sh --check: sox is not installed; checked only that the files exist" >&2
        return $bad
    fi
    for f in $(expected_files); do
        [ -s "$f" ] || continue
        case $f in beep.*) continue ;; esac
        if ! soxi "$f" >/dev/null 2>&1; then
            echo "unreadable: $f"
            bad=1
            continue
        fi
        r=$(soxi -r "$f")
        c=$(soxi -c "$f")
        if [ "$r" != "$OUT_RATE" ] || [ "$c" != 1 ]; then
            echo "format: $f is $r Hz, $c channel(s); want $OUT_RATE Hz mono"
            bad=1
        fi
        pk=$(stat_of "$f" "Pk lev dB")
        rms=$(stat_of "$f" "RMS lev dB")
        if ! awk -v pk="$pk" -v rms="$rms" 'BEGIN { exit !(pk < -0.5 && rms > -40 && rms < -10) }'; then
            echo "level: $f has peak $pk dBFS and RMS $rms dBFS (want peak < -0.5, RMS -40..-10)"
            bad=1
        fi
    done
    # Files nobody asked for are not an error (an admin may add their own), but say so.
    find . -type f \( -name '*.wav' -o -name '*.flac' \) | sed 's|^\./||' | sort >"$tmp/have"
    expected_files | sort >"$tmp/want"
    comm -23 "$tmp/have" "$tmp/want" | sed 's/^/not in the list (kept): /'
    return $bad
}

report() {
    printf '%-32s %8s %8s %8s %6s %3s\n' name 'dur s' 'peak dB' 'RMS dB' rate ch
    for f in $(expected_files); do
        if [ ! -s "$f" ]; then
            printf '%-32s missing\n' "$f"
            continue
        fi
        printf '%-32s %8s %8s %8s %6s %3s\n' "$f" "$(stat_of "$f" "Length s")" \
            "$(stat_of "$f" "Pk lev dB")" "$(stat_of "$f" "RMS lev dB")" \
            "$(soxi -r "$f")" "$(soxi -c "$f")"
    done
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

case ${1:-} in
--check)
    check
    exit $?
    ;;
--report)
    need sox soxi
    report
    exit 0
    ;;
--list)
    prompt_lines
    exit 0
    ;;
-h | --help)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
-*)
    die "unknown option $1 (try --help)"
    ;;
esac

need espeak-ng sox soxi
espeak-ng -v "$VOICE" -q "" 2>/dev/null || die "espeak-ng has no voice '$VOICE' (see espeak-ng --voices=en)"

if [ $# -eq 0 ]; then
    prompt_lines | while IFS='|' read -r name text; do
        make_prompt "$name" "$text"
    done
    make_moh
    make_beeps
    n=$(expected_files | wc -l)
    echo "made $n files in $(pwd) (voice $VOICE, $SPEED wpm, pitch $PITCH)"
    check || die "the set is not complete (see above)"
else
    for name in "$@"; do
        name=${name%."$EXT"}
        case $name in
        moh/default) make_moh ;;
        beep | beep.flac) make_beeps ;;
        *)
            text=$(text_of "$name")
            [ -n "$text" ] || die "$name: not in the prompt list (see --list)"
            make_prompt "$name" "$text"
            ;;
        esac
    done
fi
