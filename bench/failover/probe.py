#!/usr/bin/env python3
"""Send SIP OPTIONS to ADDR:PORT every INTERVAL ms (a fresh transaction each time) until a
200 answers one of them, at most LIMIT s; print the wall-clock time of that 200 (seconds
since the epoch) and exit 0, or print "none" and exit 1. Run right after a kill: only
requests sent after the start count, so a 200 is from whoever holds the address now.

usage: probe.py LOCAL_IP ADDR PORT [INTERVAL_MS=10] [LIMIT_S=15]"""
import random
import socket
import sys
import time

if len(sys.argv) < 4:
    sys.exit(__doc__)
local, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
interval = (int(sys.argv[4]) if len(sys.argv) > 4 else 10) / 1000.0
limit = float(sys.argv[5]) if len(sys.argv) > 5 else 15.0
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((local, 0))
lport = s.getsockname()[1]
s.settimeout(interval)
tag = f"{random.getrandbits(32):08x}"
start = time.time()
n = 0
while time.time() - start < limit:
    n += 1
    branch = f"z9hG4bK{tag}{n}"
    msg = (
        f"OPTIONS sip:{addr}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local}:{lport};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:probe@{local}>;tag={tag}\r\n"
        f"To: <sip:{addr}:{port}>\r\n"
        f"Call-ID: probe-{tag}-{n}\r\n"
        f"CSeq: {n} OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    )
    try:
        s.sendto(msg.encode(), (addr, port))
    except OSError:
        pass
    deadline = time.time() + interval
    while time.time() < deadline:
        try:
            data, _ = s.recvfrom(65536)
        except (socket.timeout, OSError):
            break
        if data.startswith(b"SIP/2.0 200") and f"probe-{tag}-".encode() in data:
            print(f"{time.time():.6f}")
            sys.exit(0)
print("none")
sys.exit(1)
