/*
 * Worker lcore entry point handed to rte_eal_remote_launch. The argument is
 * the lcore id as an integer; the Go function to run is looked up in a Go
 * registry, so no Go pointer ever crosses into C.
 */
#include <stdint.h>

#include <rte_launch.h>

#include "_cgo_export.h"

static int dsrlb_lcore_entry(void *arg)
{
	return dsrlbLcoreMain((unsigned int)(uintptr_t)arg);
}

int dsrlb_launch_lcore(unsigned int lcore)
{
	return rte_eal_remote_launch(dsrlb_lcore_entry, (void *)(uintptr_t)lcore, lcore);
}
