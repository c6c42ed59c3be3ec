#!/usr/bin/env python3
"""One plain TCP flow, the ceiling of any single-connection tool on a path (no handshake, no
encryption, no files): `tcp-flow.py serve ADDR PORT MIB` sends MIB MiB to the first client and
exits; `tcp-flow.py fetch ADDR PORT` connects, reads to the end and prints the bytes it got.
Used by scripts/bench-wan.sh, which times the fetch as a whole command."""
import socket
import sys


def main():
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "serve":
        mib = int(sys.argv[4])
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((addr, port))
        srv.listen(1)
        print("listening", flush=True)
        conn, _ = srv.accept()
        block = bytes(1 << 20)
        for _ in range(mib):
            conn.sendall(block)
        conn.close()
    else:
        conn = socket.create_connection((addr, port))
        got = 0
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            got += len(data)
        print(got)


main()
