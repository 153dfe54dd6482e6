#!/usr/bin/python3
"""Render a dsrlb TRex profile into a pcap, without TRex.

  render.py PROFILE --out FILE [--packets N] [profile tunables ...]
  render.py clients --out /tmp/c.pcap --packets 3000 --config testbed/trex/dsrlb-gre.yaml --size imix

PROFILE is clients, synack or latency; the tunables are the profile's (as
after TRex's -t; --help lists them). The streams take turns in proportion
to their rates (smooth weighted round robin), and the n-th packet of a
stream is what TRex's field engine makes of its base packet for flow n:
the tuple variable's source address and port written in, the IPv4 checksum
and (--l4-csum hw) the TCP/UDP checksum fixed. A latency stream's packets
carry what TRex writes into them: IP ID 0xffff and a 16-byte signature at
the end of the payload. TRex with several cores per port splits a stream's
flows between them, so its order differs; the packets are the same.

The last stdout line is a JSON summary: packets per stream and service.
"""

import argparse
import ipaddress
import json
import struct
import sys

import dsrlb_packets

DEFAULT_SRC_MAC = "02:00:00:00:00:01"  # TRex port 0 in the sample configs
LATENCY_IP_ID = 0xFFFF  # TRex's IP ID of latency packets
LATENCY_MAGIC = 0xAB


def checksum(data):
    """The Internet checksum (RFC 1071) of data."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), bytes(data)))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def fix_checksums(buf, l4):
    """Recomputes the IPv4 header checksum and, if l4, the TCP/UDP one."""
    ihl = (buf[14] & 0x0F) * 4
    buf[24:26] = b"\x00\x00"
    buf[24:26] = struct.pack("!H", checksum(buf[14:14 + ihl]))
    if not l4:
        return
    total = struct.unpack("!H", buf[16:18])[0]
    seg = 14 + ihl
    proto = buf[23]
    off = seg + (16 if proto == 6 else 6)
    buf[off:off + 2] = b"\x00\x00"
    pseudo = bytes(buf[26:34]) + struct.pack("!BBH", 0, proto, total - ihl)
    c = checksum(pseudo + bytes(buf[seg:14 + total]))
    if proto == 17 and c == 0:
        c = 0xFFFF
    buf[off:off + 2] = struct.pack("!H", c)


def stream_packet(spec, base, n, l4_csum):
    """The n-th packet TRex sends for spec (base: its packet's bytes)."""
    buf = bytearray(base)
    ihl = (buf[14] & 0x0F) * 4
    if spec.flows is not None:
        ip, port = spec.flows.flow(n)
        buf[26:30] = struct.pack("!I", ip)
        buf[14 + ihl:16 + ihl] = struct.pack("!H", port)
    if spec.pg_id is not None:
        total = struct.unpack("!H", buf[16:18])[0]
        buf[18:20] = struct.pack("!H", LATENCY_IP_ID)
        end = 14 + total
        buf[end - 16:end] = struct.pack("<BBHIQ", LATENCY_MAGIC, 1, spec.pg_id & 0xFFFF, n, n * 1000)
    if spec.flows is not None or spec.pg_id is not None:
        fix_checksums(buf, l4_csum == "hw")
    return bytes(buf)


def interleave(specs, count):
    """Stream indexes of count packets, each stream in proportion to its
    pps (smooth weighted round robin: deterministic, evenly spread)."""
    weights = [s.pps for s in specs]
    total = sum(weights)
    current = [0.0] * len(specs)
    for _ in range(count):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(specs)), key=lambda i: current[i])
        current[best] -= total
        yield best


def write_pcap(path, frames):
    """Writes frames as a classic pcap (Ethernet, microsecond timestamps),
    one microsecond apart."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            t = 1700000000 * 1000000 + i
            f.write(struct.pack("<IIII", t // 1000000, t % 1000000, len(fr), len(fr)))
            f.write(fr)


def render(profile, out, packets, tunables):
    """Writes packets packets of profile (with its tunables) to the pcap
    out and returns the summary: packets per stream and service."""
    opts = dsrlb_packets.parse_tunables(profile, tunables)
    if not opts.src_mac:
        opts.src_mac = DEFAULT_SRC_MAC
    specs = dsrlb_packets.streams(opts)
    if not opts.dst_mac_resolved:
        # Building the frames would make scapy ARP for one.
        raise ValueError("no destination MAC: give --dst-mac or a config whose port has a mac")
    bases = [bytes(s.packet) for s in specs]
    sent = [0] * len(specs)
    frames = []
    for i in interleave(specs, packets):
        frames.append(stream_packet(specs[i], bases[i], sent[i], opts.l4_csum))
        sent[i] += 1
    write_pcap(out, frames)
    return {"profile": profile, "packets": len(frames), "streams": [
        {"name": s.name, "service": s.service, "pps": s.pps, "packets": sent[i],
         "flows": s.flows.flows if s.flows else 1, "pg_id": s.pg_id,
         "size": len(bases[i]) + dsrlb_packets.FCS,
         "src_net_first": str(ipaddress.IPv4Address(s.flows.ip_min)) if s.flows else None}
        for i, s in enumerate(specs)]}


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                usage="render.py PROFILE --out FILE [--packets N] [tunables ...]")
    p.add_argument("profile", choices=dsrlb_packets.PROFILES)
    p.add_argument("--out", required=True, help="pcap to write")
    p.add_argument("--packets", type=int, default=10000, help="packets to write")
    args, tunables = p.parse_known_args(argv)
    try:
        summary = render(args.profile, args.out, args.packets, tunables)
    except ValueError as e:
        sys.exit("render: %s" % e)
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1:])
