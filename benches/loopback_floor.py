#!/usr/bin/env python3
"""The kernel's floor under a fan-out on this machine: one 200-byte frame written to each of N
loopback TCP sockets (TCP_NODELAY, as serve and bench-load set it) and read back by an epoll
reader in another process, ROUNDS times. Prints the CPU each side spends per socket and frame
and how long a round took. No WebSocket, no JSON, no scheduler: what any server and client
pay at least for one frame per socket (BENCHMARKS.md, "10 000 sockets on ONE topic").

    python3 benches/loopback_floor.py [N=10000] [ROUNDS=20] [PORT=31901]

The default port is below Linux's ephemeral range (32768 and up), so a connection left over
from an earlier run cannot hold it.
"""
import os
import resource
import select
import socket
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
PORT = int(sys.argv[3]) if len(sys.argv) > 3 else 31901

hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", PORT))
listener.listen(4096)
ready_r, ready_w = os.pipe()


def cpu_us(r0, r1):
    """User and system CPU between two rusage samples, in µs per socket and frame."""
    per = N * ROUNDS
    return (r1.ru_utime - r0.ru_utime) / per * 1e6, (r1.ru_stime - r0.ru_stime) / per * 1e6


pid = os.fork()
if pid == 0:
    conns = []
    for _ in range(N):
        c = socket.socket()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.connect(("127.0.0.1", PORT))
        c.setblocking(False)
        conns.append(c)
    ep = select.epoll()
    by_fd = {c.fileno(): c for c in conns}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    os.write(ready_w, b"r")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(ROUNDS):
        got = 0
        while got < N:
            for fd, _ in ep.poll():
                by_fd[fd].recv(65536)
                got += 1
        os.write(ready_w, b"r")
    user, sys_ = cpu_us(r0, resource.getrusage(resource.RUSAGE_SELF))
    print(f"reader: {user:.1f} µs user + {sys_:.1f} µs sys per socket and frame")
    os._exit(0)

socks = []
for _ in range(N):
    s, _ = listener.accept()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    socks.append(s)
os.read(ready_r, 1)
frame = b"x" * 200
r0 = resource.getrusage(resource.RUSAGE_SELF)
rounds = []
for _ in range(ROUNDS):
    t = time.monotonic()
    for s in socks:
        s.send(frame)
    os.read(ready_r, 1)
    rounds.append(time.monotonic() - t)
user, sys_ = cpu_us(r0, resource.getrusage(resource.RUSAGE_SELF))
os.waitpid(pid, 0)
rounds.sort()
print(f"writer: {user:.1f} µs user + {sys_:.1f} µs sys per socket and frame")
print(
    f"round (write to all {N}, all read): p50 {rounds[len(rounds) // 2] * 1e3:.1f} ms, "
    f"max {rounds[-1] * 1e3:.1f} ms; load average {os.getloadavg()[0]:.1f}"
)
