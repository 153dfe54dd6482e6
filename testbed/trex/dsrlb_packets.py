"""The packets of the dsrlb TRex profiles, as plain data.

Each profile is one function (clients, synack, latency) that returns
StreamSpecs: a base packet built with scapy, a rate, and the field-engine
ranges as plain values (FlowRange). Two consumers turn them into traffic:

- dsrlb_trex.py (imported only inside TRex) makes STLStreams: a tuple
  variable over the source address and port, written into the packet, and
  checksums fixed;
- render.py expands the same ranges into a pcap with the same semantics,
  for `dsrlb replay` (testbed/trex/trex_test.go).

This module needs scapy and PyYAML only; TRex ships both, Debian has them
as python3-scapy and python3-yaml.

The profiles are parameterised by the appliance config: the services (VIP,
protocol, port) and the port's MAC come from a dsrlb YAML (--config; by
default dsrlb-l2.yaml beside this file: the three samples share services
and MAC) or from --vip/--proto/--port/--dst-mac.

Sizes are frame sizes on the wire, FCS included, as TRex rates count them:
--size 64 builds 60-byte packets; IMIX is 60/590/1514-byte packets
(64/594/1518 on the wire) at 7:4:1.
"""

import argparse
import ipaddress
import os

import yaml
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Padding, Raw

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "dsrlb-l2.yaml")

FCS = 4
ETH_HDR = 14
ETH_MIN = 60  # smallest frame without FCS; NICs pad shorter ones
IMIX = ((64, 7), (594, 4), (1518, 1))  # wire size, share ("simple IMIX")
LATENCY_SIGNATURE = 16  # TRex overwrites the last 16 bytes of a latency packet
CLIENT_PORT_MIN = 1024  # first client source port of the field engine

PROFILES = ("clients", "synack", "latency")


class Service(object):
    """One VIP service as the clients see it."""

    def __init__(self, name, vip, proto, port):
        self.name, self.vip, self.proto, self.port = name, vip, proto, port

    def __repr__(self):
        return "%s %s/%s:%d" % (self.name, self.vip, self.proto, self.port)


class FlowRange(object):
    """The field engine of a stream: TRex's tuple variable.

    Flow k (0 <= k < flows) has source address ip_min + k % n_ips and source
    port port_min + k // n_ips: the address moves first, then the port, and
    after `flows` flows the sequence starts again.
    """

    def __init__(self, ip_min, n_ips, port_min, flows):
        self.ip_min = ip_min  # int
        self.n_ips = n_ips
        self.port_min = port_min
        self.flows = flows

    @property
    def ip_max(self):
        return self.ip_min + self.n_ips - 1

    @property
    def port_max(self):
        return self.port_min + (self.flows - 1) // self.n_ips

    def flow(self, k):
        """Returns (source address as int, source port) of flow k."""
        k %= self.flows
        return self.ip_min + k % self.n_ips, self.port_min + k // self.n_ips


class StreamSpec(object):
    """One stream: base packet, rate, field engine, latency group."""

    def __init__(self, name, service, packet, pps, flows=None, pg_id=None):
        self.name = name
        self.service = service
        self.packet = packet  # scapy packet; its source is flow 0's
        self.pps = pps
        self.flows = flows  # FlowRange or None (a single flow)
        self.pg_id = pg_id  # latency stream: TRex flow-stats group

    @property
    def l4(self):
        """The name of the packet's L4 layer: TCP or UDP."""
        return "TCP" if self.packet.haslayer(TCP) else "UDP"


def tunables_parser(profile):
    """The argparse parser of a profile's tunables (TRex: -t ...)."""
    p = argparse.ArgumentParser(
        prog="dsrlb_%s" % profile,
        description="dsrlb TRex profile %r (see docs/trex.md)" % profile)
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="dsrlb YAML to take the services and the port MAC from")
    p.add_argument("--service", default="",
                   help="comma-separated service names of the config to send to (default: all)")
    p.add_argument("--vip", default="",
                   help="comma-separated VIPs instead of the config's services")
    p.add_argument("--proto", default="tcp",
                   help="with --vip: protocol(s), tcp or udp, one or one per VIP")
    p.add_argument("--port", default="80",
                   help="with --vip: destination port(s), one or one per VIP")
    p.add_argument("--any-port", type=int, default=443,
                   help="destination port for services with port 0 (every port)")
    p.add_argument("--dst-mac", default="",
                   help="the appliance port's MAC (default: the config's; else TRex's port setting)")
    p.add_argument("--src-mac", default="",
                   help="source MAC (default: TRex's port MAC)")
    p.add_argument("--src-net", default="198.18.0.0/16",
                   help="client addresses (RFC 2544 benchmarking range)")
    p.add_argument("--flows", type=int, default=10000,
                   help="client flows (source address, port) per service")
    p.add_argument("--rate", type=float, default=1e6,
                   help="packets per second of the whole profile's traffic streams; "
                        "TRex's -m scales it")
    p.add_argument("--l4-csum", choices=("hw", "none"), default="hw",
                   help="hw: TRex fixes IPv4 and TCP/UDP checksums with the NIC's offload; "
                        "none: IPv4 only (the TCP/UDP checksum is then stale)")
    if profile == "clients":
        p.add_argument("--size", default="64",
                       help="frame size on the wire, FCS included: 64, imix or a number")
    if profile == "synack":
        p.add_argument("--syn-share", type=float, default=0.1,
                       help="share of TCP packets that are SYNs; the others are ACKs")
        p.add_argument("--size", default="64",
                       help="frame size of the ACKs on the wire (SYNs are 64)")
    if profile in ("clients", "latency"):
        p.add_argument("--lat-pps", type=float, default=1000 if profile == "latency" else 0,
                       help="packets per second of each service's latency stream (0: none)")
        p.add_argument("--lat-size", type=int, default=128,
                       help="frame size of the latency streams on the wire")
        p.add_argument("--lat-pg-id", type=int, default=100,
                       help="flow-stats group of the first service's latency stream")
    return p


def parse_tunables(profile, args):
    """Parses a profile's tunables; errors exit as argparse does."""
    if profile not in PROFILES:
        raise ValueError("unknown profile %r, want one of %s" % (profile, ", ".join(PROFILES)))
    opts = tunables_parser(profile).parse_args(list(args))
    opts.profile = profile
    return opts


def _split(s):
    return [x.strip() for x in str(s).split(",") if x.strip()]


def services(opts):
    """The services the profile sends to, from --vip or the config."""
    if opts.vip:
        vips = _split(opts.vip)
        protos, ports = _split(opts.proto), [int(x) for x in _split(opts.port)]
        out = []
        for i, vip in enumerate(vips):
            proto = protos[i] if len(protos) > 1 else protos[0]
            port = ports[i] if len(ports) > 1 else ports[0]
            out.append(Service("vip%d" % i, str(ipaddress.IPv4Address(vip)), proto, port))
        return _check(out)
    with open(opts.config) as f:
        cfg = yaml.safe_load(f)
    out = [Service(s["name"], s["vip"], s.get("protocol", "tcp"), int(s.get("port", 0)))
           for s in cfg.get("services") or []]
    if opts.service:
        want = _split(opts.service)
        unknown = sorted(set(want) - set(s.name for s in out))
        if unknown:
            raise ValueError("%s: no service %s" % (opts.config, ", ".join(unknown)))
        out = [s for s in out if s.name in want]
    return _check(out)


def _check(svcs):
    if not svcs:
        raise ValueError("no services to send to")
    for s in svcs:
        if s.proto not in ("tcp", "udp"):
            raise ValueError("service %s: protocol %r, want tcp or udp" % (s.name, s.proto))
        if not 0 <= s.port <= 65535:
            raise ValueError("service %s: port %d" % (s.name, s.port))
    return svcs


def dst_mac(opts):
    """The appliance port's MAC: --dst-mac, else the config's first port's
    mac, else "" (TRex then uses its port's destination setting)."""
    if opts.dst_mac or opts.vip:
        return opts.dst_mac
    with open(opts.config) as f:
        cfg = yaml.safe_load(f)
    ports = (cfg.get("dataplane") or {}).get("ports") or []
    return ports[0].get("mac", "") if ports else ""


def flow_range(opts):
    """The field engine's ranges for --flows clients of --src-net."""
    if opts.flows < 1:
        raise ValueError("--flows must be at least 1")
    net = ipaddress.IPv4Network(opts.src_net)
    hosts = max(1, net.num_addresses - 2)  # no network or broadcast address
    first = int(net.network_address) + (1 if net.num_addresses > 2 else 0)
    fr = FlowRange(first, min(opts.flows, hosts), CLIENT_PORT_MIN, opts.flows)
    if fr.port_max > 65535:
        raise ValueError("%d flows do not fit %s times ports %d-65535" % (opts.flows, opts.src_net, CLIENT_PORT_MIN))
    return fr


def packet(opts, svc, src, sport, wire, flags="A"):
    """A client packet to svc, wire bytes long on the wire (FCS included).

    TCP and UDP packets carry payload up to the size, as a client's data
    would; a packet with no room for payload (a 64-byte SYN) is padded
    with zeros after the IP packet, as a NIC pads short frames.

    The Ethernet header is never built here: without a destination MAC,
    scapy would resolve one by ARP on this host's network, and TRex fills
    in its port's own when the packet has none.
    """
    eth = Ether()
    if opts.dst_mac_resolved:
        eth.dst = opts.dst_mac_resolved
    if opts.src_mac:
        eth.src = opts.src_mac
    dport = svc.port or opts.any_port
    l3 = IP(src=str(ipaddress.IPv4Address(src)), dst=svc.vip, ttl=64, flags="DF", id=1)
    l3 = l3 / (TCP(sport=sport, dport=dport, flags=flags, seq=1, ack=1 if "A" in flags else 0, window=65535)
               if svc.proto == "tcp" else UDP(sport=sport, dport=dport))
    room = wire - FCS - ETH_HDR - len(l3)
    if room > 0 and flags != "S":
        l3 = l3 / Raw(b"\x00" * room)
    elif ETH_HDR + len(l3) < ETH_MIN:
        l3 = l3 / Padding(b"\x00" * (ETH_MIN - ETH_HDR - len(l3)))
    return eth / l3


def sizes(spec):
    """Frame sizes and their shares for --size: 64, imix or a number."""
    if spec == "imix":
        return IMIX
    n = int(spec)
    if not 64 <= n <= 9018:
        raise ValueError("--size %d: want 64..9018 bytes on the wire" % n)
    return ((n, 1),)


def _prepare(opts):
    opts.dst_mac_resolved = dst_mac(opts)
    return services(opts), flow_range(opts)


def clients(opts):
    """Client traffic to every service: per service and size one stream over
    --flows flows; TCP packets are ACKs with data, as in a connection's
    established phase. With --lat-pps, the latency streams join."""
    svcs, fr = _prepare(opts)
    table = sizes(opts.size)
    total = float(sum(share for _, share in table) * len(svcs))
    out = []
    for svc in svcs:
        for wire, share in table:
            src, sport = fr.flow(0)
            out.append(StreamSpec("%s-%d" % (svc.name, wire), svc.name,
                                  packet(opts, svc, src, sport, wire),
                                  opts.rate * share / total, fr))
    return out + _latency(opts, svcs)


def synack(opts):
    """A TCP SYN/ACK mix: per TCP service a SYN stream (--syn-share of the
    packets) and an ACK stream, both over the same --flows flows."""
    svcs, fr = _prepare(opts)
    tcp = [s for s in svcs if s.proto == "tcp"]
    if not tcp:
        raise ValueError("synack: no TCP service among %s" % svcs)
    if not 0 < opts.syn_share < 1:
        raise ValueError("--syn-share must be between 0 and 1")
    (wire, _), = sizes(opts.size)
    out = []
    src, sport = fr.flow(0)
    for svc in tcp:
        per = opts.rate / len(tcp)
        out.append(StreamSpec("%s-syn" % svc.name, svc.name, packet(opts, svc, src, sport, 64, "S"),
                              per * opts.syn_share, fr))
        out.append(StreamSpec("%s-ack" % svc.name, svc.name, packet(opts, svc, src, sport, wire, "A"),
                              per * (1 - opts.syn_share), fr))
    return out


def latency(opts):
    """One latency stream per service, --lat-pps each (TRex measures them
    with flow statistics)."""
    svcs, _ = _prepare(opts)
    if opts.lat_pps <= 0:
        raise ValueError("latency: --lat-pps must be positive")
    return _latency(opts, svcs)


def _latency(opts, svcs):
    """Per service one latency stream, a single flow from the last address
    of --src-net and source port 1023 (outside the field engine's)."""
    if opts.lat_pps <= 0:
        return []
    net = ipaddress.IPv4Network(opts.src_net)
    src = int(net.broadcast_address) - 1
    out = []
    for i, svc in enumerate(svcs):
        pkt = packet(opts, svc, src, CLIENT_PORT_MIN - 1, opts.lat_size)
        if opts.lat_size - FCS - ETH_HDR - 20 - (20 if svc.proto == "tcp" else 8) < LATENCY_SIGNATURE:
            raise ValueError("--lat-size %d leaves no room for TRex's %d-byte latency signature"
                             % (opts.lat_size, LATENCY_SIGNATURE))
        out.append(StreamSpec("%s-latency" % svc.name, svc.name, pkt, opts.lat_pps,
                              pg_id=opts.lat_pg_id + i))
    return out


def streams(opts):
    """The StreamSpecs of opts.profile."""
    return {"clients": clients, "synack": synack, "latency": latency}[opts.profile](opts)
