"""A stub of TRex's trex_stl_lib.api for testbed/trex/trex_test.go: NOT TRex.

It has the names and keyword arguments of the TRex STL calls the dsrlb
profiles make, records what they build, and checks what TRex would reject
when it compiles a stream: field-engine variables written before being
defined or twice, packet fields that do not exist ("IP.src" is resolved
against the scapy packet), a variable written into a field of another
size, checksum fixes on missing layers, latency packets without room for
TRex's 16-byte signature, non-positive rates. Signatures follow TRex's
public API documentation; the behaviour of the real field engine is not
emulated here (render.py expands the ranges into packets).
"""

from scapy.packet import NoPayload


class STLError(Exception):
    """What TRex would reject."""


def _field(pkt, name):
    """(offset, size) in bytes of a field named like TRex's "IP.src" or
    "IP:1.src" (the second IP header) in the scapy packet pkt."""
    layer_name, _, field_name = name.partition(".")
    layer_name, _, nth = layer_name.partition(":")
    nth = int(nth or 0)
    total = len(bytes(pkt))
    layer = pkt
    while not isinstance(layer, NoPayload):
        if layer.__class__.__name__ == layer_name:
            if nth == 0:
                break
            nth -= 1
        layer = layer.payload
    else:
        raise STLError("no layer %r in %s" % (name, pkt.summary()))
    start = total - len(bytes(layer))
    if not field_name:
        return start, len(bytes(layer))
    off = 0.0
    for f in layer.fields_desc:
        if f.name == field_name:
            if off != int(off) or f.sz != int(f.sz):
                raise STLError("field %r is not byte aligned" % name)
            return start + int(off), int(f.sz)
        off += f.sz
    raise STLError("no field %r in layer %s" % (field_name, layer_name))


class CTRexVmInsFixHwCs(object):
    L4_TYPE_UDP = 11
    L4_TYPE_TCP = 13
    L4_TYPE_IP = 17


class STLVM(object):
    def __init__(self):
        self.ins = []

    def var(self, name, min_value, max_value, size, op, step=1, **k):
        self.ins.append({"type": "var", "name": name, "min": min_value, "max": max_value, "size": size, "op": op})

    def tuple_var(self, name, ip_min, ip_max, port_min, port_max, limit_flows=0, **k):
        self.ins.append({"type": "tuple_var", "name": name, "ip_min": ip_min, "ip_max": ip_max,
                         "port_min": port_min, "port_max": port_max, "limit_flows": limit_flows})

    def write(self, fv_name, pkt_offset, offset_fixup=0, add_val=0, byte_order="big"):
        self.ins.append({"type": "write", "fv_name": fv_name, "pkt_offset": pkt_offset})

    def fix_chksum(self, offset="IP"):
        self.ins.append({"type": "fix_chksum", "offset": offset})

    def fix_chksum_hw(self, l3_offset, l4_offset, l4_type):
        self.ins.append({"type": "fix_chksum_hw", "l3_offset": l3_offset, "l4_offset": l4_offset, "l4_type": l4_type})

    def trim(self, fv_name):
        self.ins.append({"type": "trim", "fv_name": fv_name})

    def set_cached(self, cache_size):
        self.cache_size = cache_size


class STLPktBuilder(object):
    def __init__(self, pkt=None, pkt_buffer=None, vm=None, path_relative_to_profile=False,
                 build_raw=False, remove_fcs=True):
        if pkt is None:
            raise STLError("the stub wants a scapy packet")
        self.pkt = pkt
        self.vm = vm
        self.instructions = self._compile(vm.ins if vm is not None else [])

    def _compile(self, ins):
        sizes = {}
        out = []
        for i in ins:
            i = dict(i)
            if i["type"] == "var":
                new = {i["name"]: i["size"]}
            elif i["type"] == "tuple_var":
                if not 0 <= i["ip_min"] <= i["ip_max"] < 1 << 32:
                    raise STLError("tuple_var %s: bad address range" % i["name"])
                if not 0 <= i["port_min"] <= i["port_max"] <= 65535:
                    raise STLError("tuple_var %s: bad port range" % i["name"])
                flows = (i["ip_max"] - i["ip_min"] + 1) * (i["port_max"] - i["port_min"] + 1)
                if not 0 < i["limit_flows"] <= flows:
                    raise STLError("tuple_var %s: limit_flows %d, ranges hold %d" % (i["name"], i["limit_flows"], flows))
                new = {i["name"] + ".ip": 4, i["name"] + ".port": 2}
            else:
                new = {}
            for n in new:
                if n in sizes:
                    raise STLError("variable %s defined twice" % n)
            sizes.update(new)
            if i["type"] in ("write", "trim") and i["fv_name"] not in sizes:
                raise STLError("variable %s does not exist" % i["fv_name"])
            if i["type"] == "write":
                off, size = _field(self.pkt, i["pkt_offset"])
                if size != sizes[i["fv_name"]]:
                    raise STLError("%s (%d bytes) written into %s (%d bytes)"
                                   % (i["fv_name"], sizes[i["fv_name"]], i["pkt_offset"], size))
                i["offset"], i["size"] = off, size
            if i["type"] == "fix_chksum":
                i["offset"] = _field(self.pkt, i["offset"])[0]
            if i["type"] == "fix_chksum_hw":
                want = {"TCP": CTRexVmInsFixHwCs.L4_TYPE_TCP, "UDP": CTRexVmInsFixHwCs.L4_TYPE_UDP}
                if want.get(i["l4_offset"]) != i["l4_type"]:
                    raise STLError("fix_chksum_hw: l4_type %s for layer %s" % (i["l4_type"], i["l4_offset"]))
                i["l3_offset"] = _field(self.pkt, i["l3_offset"])[0]
                i["l4_offset"] = _field(self.pkt, i["l4_offset"])[0]
            out.append(i)
        return out


class STLTXMode(object):
    def __init__(self, pps=None, bps_L1=None, bps_L2=None, percentage=None):
        given = [x for x in (pps, bps_L1, bps_L2, percentage) if x is not None]
        if len(given) > 1:
            raise STLError("give one rate")
        if given and not given[0] > 0:
            raise STLError("rate must be positive, got %r" % given[0])
        self.pps = pps if given else 1.0


class STLTXCont(STLTXMode):
    pass


class STLFlowStats(object):
    def __init__(self, pg_id, vxlan=False, ieee_1588=False):
        self.pg_id, self.latency = pg_id, False


class STLFlowLatencyStats(STLFlowStats):
    def __init__(self, pg_id, vxlan=False, ieee_1588=False):
        super(STLFlowLatencyStats, self).__init__(pg_id, vxlan, ieee_1588)
        self.latency = True


class STLStream(object):
    def __init__(self, name=None, packet=None, mode=STLTXCont(pps=1), enabled=True, self_start=True,
                 isg=0.0, flow_stats=None, next=None, stream_id=None, action_count=0, random_seed=0,
                 mac_src_override_by_pkt=None, mac_dst_override_mode=None, dummy_stream=False,
                 start_paused=False, core_id=-1):
        if not isinstance(packet, STLPktBuilder):
            raise STLError("stream %s: packet is not an STLPktBuilder" % name)
        if flow_stats is not None and flow_stats.latency:
            layer = packet.pkt.getlayer(2)
            hdr = 20 if layer.__class__.__name__ == "TCP" else 8
            if len(layer) - hdr < 16:
                raise STLError("stream %s: latency packet payload under 16 bytes" % name)
        self.name, self.packet, self.mode, self.flow_stats = name, packet, mode, flow_stats
