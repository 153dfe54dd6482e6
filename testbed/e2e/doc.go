// Package e2e holds the dsrlb end-to-end tests: the real appliance (`dsrlb
// run` on DPDK net_af_packet), real Linux kernels as clients and DSR
// backends in network namespaces, real clients (curl, wrk, Go's HTTP and
// UDP stacks). They need root; TestMain builds the binaries, or takes them
// from $DSRLB_TESTBED_BIN (a directory with dsrlb, dsrctl and backendsrv).
package e2e
