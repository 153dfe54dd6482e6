"""TRex side of the dsrlb profiles: StreamSpecs (dsrlb_packets) to STLStreams.

Imported only inside TRex (trex_stl_lib): the profile files
dsrlb_clients.py, dsrlb_synack.py and dsrlb_latency.py each register a
Profile. TRex puts the profile's directory first on sys.path, so this
module and dsrlb_packets are found beside them.

The field engine of a stream with flows is one tuple variable over the
source address and port (dsrlb_packets.FlowRange has the same semantics),
written into IP.src and TCP/UDP.sport, then the checksums are fixed: by
the NIC's offload (--l4-csum hw) or the IPv4 header only (--l4-csum none).
A latency stream is a single flow with flow statistics (STLFlowLatencyStats).
"""

from trex_stl_lib.api import *  # noqa: F401,F403 (TRex's profile API)

import dsrlb_packets


def _legacy_tunables(kwargs):
    """Tunables given the pre-argparse way (-t size=64,flows=100) as a list."""
    out = []
    for k, v in sorted(kwargs.items()):
        out += ["--" + k.replace("_", "-"), str(v)]
    return out


def stl_stream(spec, opts):
    """The STLStream of one StreamSpec."""
    vm = None
    if spec.flows is not None:
        fr = spec.flows
        vm = STLVM()
        vm.tuple_var(name="client", ip_min=fr.ip_min, ip_max=fr.ip_max,
                     port_min=fr.port_min, port_max=fr.port_max, limit_flows=fr.flows)
        vm.write(fv_name="client.ip", pkt_offset="IP.src")
        vm.write(fv_name="client.port", pkt_offset=spec.l4 + ".sport")
        if opts.l4_csum == "hw":
            l4_type = CTRexVmInsFixHwCs.L4_TYPE_TCP if spec.l4 == "TCP" else CTRexVmInsFixHwCs.L4_TYPE_UDP
            vm.fix_chksum_hw(l3_offset="IP", l4_offset=spec.l4, l4_type=l4_type)
        else:
            vm.fix_chksum(offset="IP")
    flow_stats = STLFlowLatencyStats(pg_id=spec.pg_id) if spec.pg_id is not None else None
    return STLStream(name=spec.name,
                     packet=STLPktBuilder(pkt=spec.packet, vm=vm),
                     mode=STLTXCont(pps=spec.pps),
                     flow_stats=flow_stats)


class Profile(object):
    """A TRex STL profile object: get_streams parses the tunables
    (console: start -f PROFILE -t --flows 100000 --size imix)."""

    def __init__(self, name):
        self.name = name

    def get_streams(self, tunables=(), port_id=0, direction=0, **kwargs):
        args = list(tunables) + _legacy_tunables(kwargs)
        opts = dsrlb_packets.parse_tunables(self.name, args)
        return [stl_stream(s, opts) for s in dsrlb_packets.streams(opts)]
