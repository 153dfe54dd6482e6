"""TRex STL profile: clients of every VIP service of a dsrlb appliance.

Per service and frame size one continuous stream over --flows flows (the
field engine walks the source address, then the source port), 64-byte
frames or IMIX (60/590/1514-byte packets, 7:4:1); TCP packets are ACKs
with data. --lat-pps adds a latency stream per service. The services and
the appliance's MAC come from --config (a dsrlb YAML). docs/trex.md.

  start -f testbed/trex/dsrlb_clients.py -p 0 -t --config dsrlb.yaml --size imix --flows 100000
"""

import dsrlb_trex


def register():
    return dsrlb_trex.Profile("clients")
