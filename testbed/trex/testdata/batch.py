"""Runs many render.py and stubrun.py jobs in one Python process, for
trex_test.go: importing scapy takes about a second, every job after the
first is then quick.

  PYTHONPATH=testdata/trexstub python3 testdata/batch.py JOBS.json

JOBS.json is a list of {"render": [PROFILE, OUT, PACKETS, TUNABLES]} and
{"stub": [PROFILE_FILE, TUNABLES, LEGACY]}; stdout is one JSON list of
their results, in order (render.render's and stubrun.load's).
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # testbed/trex: render, dsrlb_packets
sys.path.insert(0, HERE)

import render  # noqa: E402
import stubrun  # noqa: E402


def main(path):
    with open(path) as f:
        jobs = json.load(f)
    out = []
    for job in jobs:
        if "render" in job:
            out.append(render.render(*job["render"]))
        else:
            out.append(stubrun.load(*job["stub"]))
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
