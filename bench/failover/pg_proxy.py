#!/usr/bin/env python3
"""Forward a Unix socket to PostgreSQL over TCP, so nodes in network namespaces reach the
host's PostgreSQL (a socket is a file: it crosses network namespaces; 127.0.0.1 does not).

usage: pg_proxy.py SOCKET_DIR HOST PORT    (listens on SOCKET_DIR/.s.PGSQL.5432, where a
postgres:// URL with ?host=SOCKET_DIR looks)"""
import asyncio
import os
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sock_dir, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    path = os.path.join(sock_dir, ".s.PGSQL.5432")

    async def handle(cr, cw):
        try:
            sr, sw = await asyncio.open_connection(host, port)
        except OSError:
            cw.close()
            return
        await asyncio.gather(pipe(cr, sw), pipe(sr, cw))

    server = await asyncio.start_unix_server(handle, path=path)
    os.chmod(path, 0o777)
    async with server:
        await server.serve_forever()


asyncio.run(main())
