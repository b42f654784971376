#!/usr/bin/env python3
"""Writes a G.711 A-law RTP pcap of SECS seconds at 20 ms packets (50 pps, 160-byte payload,
172-byte RTP packets, as most phones send and as bench/relay offers) for SIPp's
play_pcap_audio, from the audio of SIPp's own g711a.pcap (about 7 s at 30 ms, looped).

usage: make_pcap.py SRC.pcap SECS OUT.pcap      (prints the number of packets)

SIPp replaces the addresses and ports and recomputes the UDP checksum when it plays a
pcap; it paces the packets by their pcap timestamps. Sequence numbers and RTP timestamps
run on without a jump across the loops; one SSRC."""
import struct
import sys

src, secs, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
data = open(src, 'rb').read()
magic = struct.unpack('<I', data[:4])[0]
if magic != 0xa1b2c3d4:
    sys.exit(f'{src}: not a little-endian microsecond pcap')
linktype = struct.unpack('<I', data[20:24])[0]
if linktype != 1:
    sys.exit(f'{src}: link type {linktype}, want Ethernet (1)')
audio = bytearray()
off = 24
while off + 16 <= len(data):
    _, _, caplen, _ = struct.unpack('<IIII', data[off:off + 16])
    frame = data[off + 16:off + 16 + caplen]
    off += 16 + caplen
    if frame[12:14] != b'\x08\x00' or frame[23] != 17:
        continue  # not IPv4/UDP
    ihl = (frame[14] & 0x0f) * 4
    rtp = frame[14 + ihl + 8:]
    if len(rtp) < 12 or rtp[0] >> 6 != 2 or rtp[1] & 0x7f != 8:
        continue  # not RTP PCMA
    cc = rtp[0] & 0x0f
    audio += rtp[12 + 4 * cc:]
if not audio:
    sys.exit(f'{src}: no PCMA RTP found')

FRAME = 160                                  # 20 ms of 8 kHz G.711
count = int(round(secs * 50))
ssrc, seq0, ts0, t0 = 0x52464231, 1000, 160000, 1_700_000_000
recs = []
for i in range(count):
    a = (i * FRAME) % len(audio)
    payload = bytes((audio + audio)[a:a + FRAME])
    rtp = struct.pack('!BBHII', 0x80, 8 | (0x80 if i == 0 else 0), (seq0 + i) & 0xffff,
                      (ts0 + i * FRAME) & 0xffffffff, ssrc) + payload
    udp = struct.pack('!HHHH', 6000, 6000, 8 + len(rtp), 0) + rtp
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), i & 0xffff, 0, 64, 17, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    frame = b'\x00' * 12 + b'\x08\x00' + ip + udp
    us = i * 20_000
    recs.append(struct.pack('<IIII', t0 + us // 1_000_000, us % 1_000_000, len(frame), len(frame)) + frame)
with open(out, 'wb') as f:
    f.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    f.writelines(recs)
print(count)
