# The network bench's forwarding check, run inside a host's namespace (ip netns exec):
# plays the VM on a port's TAP. Prints "ready", reads "tap mac ip target" on stdin, then
# waits until (1) the TAP exists, (2) nftables has it among the filtered ports of
# `bridge quantix_l2` (listed through libnftables every half millisecond), and
# (3) a ping from the port's MAC and address, written into the TAP, is answered by the
# host's service address `target` (ARP first). Prints "ok <CLOCK_MONOTONIC ns>" at the
# answer, or "timeout <what>" after 30 s.
# Values come from the bench (ids and addresses it made), never from a user.
import fcntl, os, select, struct, sys, time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from nftpoll import Nft

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def arp(op, smac, sip, dmac, dip, eth_dst):
    return eth_dst + smac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + smac + sip + dmac + dip


def echo(smac, sip, dmac, dip, seq):
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x5158, seq) + b"quantix-bench"
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq, 0x4000, 64, 1, 0, sip, dip)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return dmac + smac + b"\x08\x00" + ip + icmp


def main():
    nft = Nft()
    print("ready", flush=True)
    tap, mac_s, ip_s, target_s = sys.stdin.readline().split()
    mac = bytes.fromhex(mac_s.replace(":", ""))
    ip, target = bytes(map(int, ip_s.split("."))), bytes(map(int, target_s.split(".")))
    deadline = time.monotonic() + 30
    stage = "the TAP to exist"
    while not os.path.exists(f"/sys/class/net/{tap}"):
        if time.monotonic() > deadline:
            return print(f"timeout {stage}", flush=True)
        time.sleep(0.001)
    fd = os.open("/dev/net/tun", os.O_RDWR)
    # The TAP exists (persistent): this attaches to it, as QEMU's -netdev tap,ifname= does.
    # EBUSY while `ip tuntap add` still holds it open.
    while True:
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", tap.encode(), IFF_TAP | IFF_NO_PI))
            break
        except OSError as e:
            if e.errno != 16 or time.monotonic() > deadline:
                raise
            time.sleep(0.001)
    stage = "nftables to filter the TAP"
    while f'"{tap}"' not in nft.run("list set bridge quantix_l2 ports"):
        if time.monotonic() > deadline:
            return print(f"timeout {stage}", flush=True)
        time.sleep(0.001)
    stage = "an answer to ping through the TAP"
    peer, seq = None, 0
    while time.monotonic() < deadline:
        seq += 1
        try:
            if peer is None:
                os.write(fd, arp(1, mac, ip, b"\0" * 6, target, b"\xff" * 6))
            else:
                os.write(fd, echo(mac, ip, peer, target, seq))
        except OSError:
            pass  # the TAP is not up on the bridge yet
        until = time.monotonic() + 0.005
        while time.monotonic() < until:
            r, _, _ = select.select([fd], [], [], max(0, until - time.monotonic()))
            if not r:
                break
            f = os.read(fd, 4096)
            kind = f[12:14]
            if kind == b"\x08\x06" and len(f) >= 42:
                op, sha, spa, tpa = struct.unpack("!H", f[20:22])[0], f[22:28], f[28:32], f[38:42]
                if op == 2 and spa == target:
                    peer = sha
                    break
                if op == 1 and tpa == ip:  # the host asks for us: answer
                    os.write(fd, arp(2, mac, ip, sha, spa, sha))
            elif kind == b"\x08\x00" and len(f) >= 34 and f[23] == 1 and f[26:30] == target and f[34] == 0:
                print(f"ok {time.monotonic_ns()}", flush=True)
                return
    print(f"timeout {stage}", flush=True)


main()
