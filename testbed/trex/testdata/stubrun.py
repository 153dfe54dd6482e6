"""Loads a dsrlb TRex profile as TRex's console does, against the stub
trex_stl_lib in testdata/trexstub (NOT TRex), and prints what its
get_streams built as JSON. trex_test.go runs load() through batch.py.

  PYTHONPATH=testdata/trexstub python3 testdata/stubrun.py [--legacy] PROFILE.py [tunables ...]

--legacy passes the tunables the pre-argparse way, as keyword arguments
(--flows 10 becomes flows="10").
"""

import json
import os
import sys


def load(path, tunables, legacy=False):
    """Loads the profile file at path with tunables as TRex's console does
    and returns what the stub recorded of its streams."""
    # What TRex's STLProfile.load_py does: the profile's directory first on
    # sys.path, import the file as a module, call register().get_streams.
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        module = __import__(os.path.basename(path)[:-len(".py")])
    finally:
        sys.path.pop(0)
    profile = module.register()
    if legacy:
        kwargs = {tunables[i].lstrip("-").replace("-", "_"): tunables[i + 1] for i in range(0, len(tunables), 2)}
        streams = profile.get_streams(direction=0, port_id=0, **kwargs)
    else:
        streams = profile.get_streams(direction=0, port_id=0, tunables=tunables)
    names, groups = set(), set()
    out = []
    for s in streams:
        if s.name in names:
            raise ValueError("stream name %s twice" % s.name)
        names.add(s.name)
        pg = s.flow_stats.pg_id if s.flow_stats else None
        if pg is not None:
            if pg in groups:
                raise ValueError("flow-stats group %d twice" % pg)
            groups.add(pg)
        out.append({"name": s.name, "pps": s.mode.pps, "pg_id": pg,
                    "latency": bool(s.flow_stats and s.flow_stats.latency),
                    "packet": bytes(s.packet.pkt).hex(), "instructions": s.packet.instructions})
    return {"streams": out}


def main(argv):
    legacy = bool(argv) and argv[0] == "--legacy"
    if legacy:
        argv = argv[1:]
    print(json.dumps(load(argv[0], argv[1:], legacy)))


if __name__ == "__main__":
    main(sys.argv[1:])
