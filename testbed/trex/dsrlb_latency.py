"""TRex STL profile: one latency stream per VIP service of a dsrlb appliance.

A single flow per service at --lat-pps with flow statistics
(STLFlowLatencyStats, groups --lat-pg-id, +1, ...): TRex reports min/avg/
max latency, jitter and a histogram per group. TRex recognises its latency
packets by the first IPv4 header, so this works through l2 DSR only; in
ipip/gre the appliance's envelope hides it (docs/trex.md, "Latency").

  start -f testbed/trex/dsrlb_latency.py -p 0 -t --config dsrlb.yaml --lat-pps 1000
"""

import dsrlb_trex


def register():
    return dsrlb_trex.Profile("latency")
