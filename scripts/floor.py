#!/usr/bin/env python3
"""Lower bounds for one random 4 KiB read through any FUSE mount that fetches over TCP.

A cold random read through `pcp mount` (or sshfs) costs at least: a FUSE round trip (reader ->
kernel -> mount process -> kernel -> reader), a TCP round trip to the serving process, and a
cold 4 KiB read from the serving disk. This measures each on this machine:

  sudo scripts/floor.py FILE [MOUNTED_FILE]

FILE: a large file on the serving disk (cold reads: needs root to drop the page cache).
MOUNTED_FILE: the same file through a running `pcp mount`; its first pass fills pcp's block
cache, then the page cache of the mounted file is dropped and the same reads are timed again:
that second pass is a FUSE round trip answered from pcp's memory.

Prints microseconds per operation (median of 3 passes) and the IOPS ceiling they imply.
"""

import os
import random
import socket
import statistics
import sys
import time

READS = 2000


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def offsets(size, seed):
    r = random.Random(seed)
    return [r.randrange(0, size - 4096) // 4096 * 4096 for _ in range(READS)]


def time_preads(fd, offs):
    t = time.perf_counter()
    for o in offs:
        os.pread(fd, 4096, o)
    return (time.perf_counter() - t) / len(offs) * 1e6


def cold_pread_us(path):
    runs = []
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    for seed in (1, 2, 3):
        drop_caches()
        runs.append(time_preads(fd, offsets(size, seed)))
    os.close(fd)
    return statistics.median(runs)


def tcp_rtt_us(n=5000):
    """Ping-pong of 40 bytes between two processes over loopback TCP (TCP_NODELAY)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    pid = os.fork()
    if pid == 0:
        c, _ = srv.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            d = c.recv(64)
            if not d:
                os._exit(0)
            c.sendall(d)
    c = socket.create_connection(srv.getsockname())
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            c.sendall(b"x" * 40)
            c.recv(64)
        runs.append((time.perf_counter() - t) / n * 1e6)
    c.close()
    os.waitpid(pid, 0)
    return statistics.median(runs)


def fuse_cached_us(path):
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    offs = offsets(size, 4)
    time_preads(fd, offs)  # fill pcp's cache
    runs = []
    for _ in range(3):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        runs.append(time_preads(fd, offs))
    os.close(fd)
    return statistics.median(runs)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    disk = cold_pread_us(sys.argv[1])
    rtt = tcp_rtt_us()
    print(f"cold 4 KiB pread on the serving disk: {disk:.0f} us")
    print(f"loopback TCP round trip between two processes: {rtt:.0f} us")
    total = disk + rtt
    if len(sys.argv) == 3:
        fuse = fuse_cached_us(sys.argv[2])
        print(f"FUSE round trip answered from pcp's cache: {fuse:.0f} us")
        total += fuse
    print(f"sum: {total:.0f} us per cold random read, at most {1e6 / total:.0f} IOPS "
          "with no work at all in either process")


if __name__ == "__main__":
    main()
