"""TRex STL profile: a TCP SYN/ACK mix to every TCP service of a dsrlb
appliance.

Per TCP service a SYN stream (--syn-share of the packets, 64-byte frames)
and an ACK stream (--size), both over the same --flows flows: connection
openings mixed with established traffic. docs/trex.md.

  start -f testbed/trex/dsrlb_synack.py -p 0 -t --config dsrlb.yaml --syn-share 0.2
"""

import dsrlb_trex


def register():
    return dsrlb_trex.Profile("synack")
