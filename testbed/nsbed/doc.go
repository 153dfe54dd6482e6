// Package nsbed builds dsrlb testbeds out of Linux network namespaces: real
// kernels as clients, backends and routers, Linux bridges as switches, and
// the dsrlb appliance driving a veth through DPDK's net_af_packet PMD. The
// e2e tests (testbed/e2e) and the demo (testbed/demo, run by `make demo`)
// both use it, so the topology exists in one place.
//
// A Bed owns everything it creates: namespaces named with a per-run prefix
// (dsrtb<pid>-), processes, a work directory with configs, logs and
// captures. Close undoes all of it; it runs on test cleanup, on SIGINT and
// SIGTERM (CloseOnSignal), and a Bed that a killed process left behind is
// swept by the next New.
//
// Topologies are data (Topology: segments and hosts with links, addresses,
// routes), so the L2 DSR bed (StartL2) is one preset and an L3 bed with a
// router, or two appliances behind ECMP, are others built the same way.
//
// Every veth keeps the kernel's default offloads, as in any container or
// namespace lab an operator would meet: an appliance reading a veth with
// net_af_packet receives partial checksums and TSO/GSO super-frames of up
// to 64 KB, which it completes and segments. Link.PeerOffloadsOff turns
// the offloads of the switch port facing a link off (ethtool), so that the
// frames arrive complete and MTU-sized, as from a real NIC: the exception,
// for a test that needs it (TestL3DSR). Links marked Raw have their own
// kernel told to ignore them (no address, no IPv6, rp_filter=1,
// arp_ignore=8): otherwise the appliance's kernel also receives every frame
// on that veth and answers VIP traffic itself with a TCP reset.
package nsbed
