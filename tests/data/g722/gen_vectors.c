/*
 * Generates the G.722 test vectors of src/media/g722.rs with spandsp, an implementation
 * independent of ours. See README.md for how to build and run it.
 *
 * Writes, all little-endian:
 *   input.s16le        the deterministic 16 kHz test signal (generated here)
 *   encoded.g722       spandsp's 64 kbit/s bitstream of input.s16le
 *   decoded.s16le      spandsp's decoding of encoded.g722
 *   random.g722        pseudo-random octets (a hostile bitstream)
 *   random_64k.s16le   spandsp's decoding of random.g722 at 64 kbit/s
 *   random_56k.s16le   ... at 56 kbit/s, of each octet's upper 7 bits
 *   random_48k.s16le   ... at 48 kbit/s, of each octet's upper 6 bits
 *   extreme.g722       runs of extreme codes that drive the predictor into saturation
 *   extreme_64k.s16le  spandsp's decoding of extreme.g722 at 64 kbit/s
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <spandsp.h>

#define RATE 16000
#define INPUT_SAMPLES (2 * RATE)
#define RANDOM_OCTETS 4000
#define EXTREME_RUN 300
#define EXTREME_PATTERNS 8
#define EXTREME_OCTETS (EXTREME_RUN * EXTREME_PATTERNS)

static uint32_t lcg_state = 12345;

/* A fixed LCG (Numerical Recipes constants), so the vectors never depend on libc's rand(). */
static uint32_t lcg_next(void)
{
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return lcg_state;
}

static int16_t clip16(double v)
{
    long r = lround(v);
    if (r > 32767)
        return 32767;
    if (r < -32768)
        return -32768;
    return (int16_t) r;
}

static void write_s16le(const char *name, const int16_t *samples, int count)
{
    FILE *f = fopen(name, "wb");
    if (f == NULL) {
        perror(name);
        exit(1);
    }
    for (int i = 0; i < count; i++) {
        uint16_t u = (uint16_t) samples[i];
        fputc(u & 0xFF, f);
        fputc(u >> 8, f);
    }
    fclose(f);
}

static void write_bytes(const char *name, const uint8_t *bytes, int count)
{
    FILE *f = fopen(name, "wb");
    if (f == NULL || fwrite(bytes, 1, count, f) != (size_t) count) {
        perror(name);
        exit(1);
    }
    fclose(f);
}

/* Seven sections, each exercising a different part of the codec. */
static void make_input(int16_t *x)
{
    const double two_pi = 2.0 * M_PI;
    for (int n = 0; n < INPUT_SAMPLES; n++) {
        double t = (double) n / RATE;
        double v;
        if (n < 4000) {
            /* Silence: the idle state and its adaptation floor. */
            v = 0.0;
        } else if (n < 10000) {
            /* Low-band and high-band tones together (6 kHz lands in the upper sub-band). */
            v = 6000.0 * sin(two_pi * 440.0 * t) + 4000.0 * sin(two_pi * 3000.0 * t)
                + 3000.0 * sin(two_pi * 6000.0 * t);
        } else if (n < 18000) {
            /* Linear chirp 50 Hz -> 7950 Hz over 0.5 s at -6 dBFS. */
            double s = (double) (n - 10000) / RATE;
            double f0 = 50.0, k = (7950.0 - 50.0) / 0.5;
            v = 16384.0 * sin(two_pi * (f0 * s + 0.5 * k * s * s));
        } else if (n < 22000) {
            /* White noise at about -15 dBFS. */
            v = ((double) (int32_t) lcg_next()) / 2147483648.0 * 10000.0;
        } else if (n < 25000) {
            /* Full-scale noise and clipped square waves: drives every saturation. */
            if (n < 23500)
                v = ((lcg_next() >> 16) & 1) ? 32767.0 : -32768.0;
            else
                v = (sin(two_pi * 700.0 * t) >= 0.0) ? 32767.0 : -32768.0;
        } else if (n < 29000) {
            /* A decaying 1 kHz tone: the step sizes adapting down. */
            double s = (double) (n - 25000) / RATE;
            v = 20000.0 * exp(-s * 12.0) * sin(two_pi * 1000.0 * t);
        } else {
            /* Very quiet noise, a few LSBs. */
            v = (double) ((int) (lcg_next() >> 29) - 4);
        }
        x[n] = clip16(v);
    }
}

/*
 * Runs of octets random ones rarely produce: the largest codes of one sign (the zero
 * predictor's coefficients and the scale factor climb to their limits, so its sums
 * overflow 16 bits), of alternating signs, and the smallest codes (the scales decay).
 */
static void make_extreme(uint8_t *octets)
{
    static const uint8_t patterns[EXTREME_PATTERNS][4] = {
        {0x20, 0x20, 0x20, 0x20}, /* low: largest positive; high: largest negative */
        {0xA4, 0xA4, 0xA4, 0xA4}, /* low: largest negative; high: largest positive */
        {0xA0, 0xA0, 0xA0, 0xA0}, /* both largest positive */
        {0x20, 0x04, 0x20, 0x04}, /* low alternates sign at the largest magnitude */
        {0xA0, 0xA0, 0x04, 0x04}, /* pairs of each sign */
        {0x7D, 0x7D, 0x7D, 0x7D}, /* both smallest positive */
        {0x3F, 0xFF, 0x3F, 0xFF}, /* smallest negative, high alternating */
        {0x20, 0x20, 0x20, 0x3D}, /* mostly largest, then a zero difference */
    };
    for (int p = 0; p < EXTREME_PATTERNS; p++)
        for (int i = 0; i < EXTREME_RUN; i++)
            octets[p * EXTREME_RUN + i] = patterns[p][i % 4];
}

static void decode_at(int rate, const uint8_t *octets, int count, int16_t *out)
{
    g722_decode_state_t *dec = g722_decode_init(NULL, rate, 0);
    if (dec == NULL) {
        fprintf(stderr, "g722_decode_init(%d) failed\n", rate);
        exit(1);
    }
    int produced = g722_decode(dec, out, octets, count);
    if (produced != 2 * count) {
        fprintf(stderr, "decode at %d gave %d samples, want %d\n", rate, produced, 2 * count);
        exit(1);
    }
    g722_decode_free(dec);
}

int main(void)
{
    static int16_t input[INPUT_SAMPLES];
    static uint8_t encoded[INPUT_SAMPLES / 2];
    static int16_t decoded[INPUT_SAMPLES];
    static uint8_t random_octets[RANDOM_OCTETS];
    static uint8_t shifted[RANDOM_OCTETS];
    static int16_t random_decoded[2 * RANDOM_OCTETS];

    make_input(input);
    write_s16le("input.s16le", input, INPUT_SAMPLES);

    g722_encode_state_t *enc = g722_encode_init(NULL, 64000, 0);
    if (enc == NULL) {
        fprintf(stderr, "g722_encode_init failed\n");
        return 1;
    }
    int octets = g722_encode(enc, encoded, input, INPUT_SAMPLES);
    if (octets != INPUT_SAMPLES / 2) {
        fprintf(stderr, "encode gave %d octets, want %d\n", octets, INPUT_SAMPLES / 2);
        return 1;
    }
    g722_encode_free(enc);
    write_bytes("encoded.g722", encoded, octets);

    decode_at(64000, encoded, octets, decoded);
    write_s16le("decoded.s16le", decoded, 2 * octets);

    for (int i = 0; i < RANDOM_OCTETS; i++)
        random_octets[i] = (uint8_t) (lcg_next() >> 24);
    write_bytes("random.g722", random_octets, RANDOM_OCTETS);

    decode_at(64000, random_octets, RANDOM_OCTETS, random_decoded);
    write_s16le("random_64k.s16le", random_decoded, 2 * RANDOM_OCTETS);

    /* spandsp's unpacked 56 and 48 kbit/s codes are right-aligned 7- and 6-bit values;
       in the G.722 octet they are the upper bits (the lower ones carry auxiliary data). */
    for (int i = 0; i < RANDOM_OCTETS; i++)
        shifted[i] = random_octets[i] >> 1;
    decode_at(56000, shifted, RANDOM_OCTETS, random_decoded);
    write_s16le("random_56k.s16le", random_decoded, 2 * RANDOM_OCTETS);

    for (int i = 0; i < RANDOM_OCTETS; i++)
        shifted[i] = random_octets[i] >> 2;
    decode_at(48000, shifted, RANDOM_OCTETS, random_decoded);
    write_s16le("random_48k.s16le", random_decoded, 2 * RANDOM_OCTETS);

    static uint8_t extreme[EXTREME_OCTETS];
    static int16_t extreme_decoded[2 * EXTREME_OCTETS];
    make_extreme(extreme);
    write_bytes("extreme.g722", extreme, EXTREME_OCTETS);
    decode_at(64000, extreme, EXTREME_OCTETS, extreme_decoded);
    write_s16le("extreme_64k.s16le", extreme_decoded, 2 * EXTREME_OCTETS);

    printf("wrote %d input samples, %d octets, %d random octets\n", INPUT_SAMPLES, octets,
           RANDOM_OCTETS);
    return 0;
}
