// Package trex holds the TRex stateless profiles for a dsrlb appliance and
// their sample configs (the Python and YAML files beside this one; see
// docs/trex.md). It has no Go API: its test renders every profile into a
// pcap with scapy (render.py), replays it through `dsrlb replay` with the
// config of each mode (l2, ipip, gre) and checks that every packet comes
// out once, to a backend of its service, and runs the profiles against a
// stub of TRex's API (testdata/trexstub).
package trex
