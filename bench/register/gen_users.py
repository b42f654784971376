#!/usr/bin/env python3
"""Write the users of the REGISTER benchmark, once for SIPp and once for Ringfort.

  SIPP_FILE: SIPp injection CSV (SEQUENTIAL), one line per user:
             user;password;[authentication username=user password=password]
             field2 is the whole auth keyword, since SIPp 3.6 cannot nest [fieldN] inside
             [authentication username=... password=...].
  RF_FILE:   `ringfort extension import` CSV: number,password,name

Every user has the same password, so one SIPp file serves Ringfort (per-user HA1 in its
database) and Kamailio (static password in kamailio.cfg). Ringfort wants >= 8 characters.

usage: gen_users.py N PASSWORD SIPP_FILE RF_FILE [prefix=u] [start=100000]
(adapted from the shared peers' sipp/gen_users.py)"""
import sys

if len(sys.argv) < 5:
    sys.exit(__doc__)
n = int(sys.argv[1])
password = sys.argv[2]
sipp_file, rf_file = sys.argv[3], sys.argv[4]
prefix = sys.argv[5] if len(sys.argv) > 5 else "u"
start = int(sys.argv[6]) if len(sys.argv) > 6 else 100000
for bad in ";,[] ":
    if bad in password:
        sys.exit(f"password must not contain {bad!r}")
with open(sipp_file, "w") as s, open(rf_file, "w") as r:
    s.write("SEQUENTIAL\n")
    for i in range(n):
        u = f"{prefix}{start + i}"
        s.write(f"{u};{password};[authentication username={u} password={password}]\n")
        r.write(f"{u},{password},Bench {u}\n")
print(f"wrote {n} users to {sipp_file} and {rf_file}")
