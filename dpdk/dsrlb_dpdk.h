/*
 * C side of package dpdk: the DPDK headers the binding needs, the mbuf field
 * offsets that Go reads through, and small static inline helpers.
 *
 * The helpers exist for three reasons: DPDK's fast-path calls are static
 * inline functions (rte_eth_rx_burst, rte_eth_tx_burst), some control calls
 * report failure through rte_errno, which is thread-local and must be read on
 * the thread that failed, and some structures have bitfields cgo cannot
 * reach. Fast-path helpers take addresses as uintptr_t so that cgo never sees
 * a pointer argument and never runs its pointer checks.
 */
#ifndef DSRLB_DPDK_H
#define DSRLB_DPDK_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <rte_common.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_mempool.h>

/* Byte offsets of the struct rte_mbuf fields that Go reads and writes. */
enum {
	DSRLB_MBUF_BUF_ADDR = offsetof(struct rte_mbuf, buf_addr),
	DSRLB_MBUF_DATA_OFF = offsetof(struct rte_mbuf, data_off),
	DSRLB_MBUF_NB_SEGS = offsetof(struct rte_mbuf, nb_segs),
	DSRLB_MBUF_PORT = offsetof(struct rte_mbuf, port),
	DSRLB_MBUF_PKT_LEN = offsetof(struct rte_mbuf, pkt_len),
	DSRLB_MBUF_DATA_LEN = offsetof(struct rte_mbuf, data_len),
	DSRLB_MBUF_BUF_LEN = offsetof(struct rte_mbuf, buf_len),
	DSRLB_MBUF_NEXT = offsetof(struct rte_mbuf, next),
	DSRLB_MBUF_HEADROOM = RTE_PKTMBUF_HEADROOM,
	DSRLB_MBUF_DEFAULT_BUF_SIZE = RTE_MBUF_DEFAULT_BUF_SIZE,
	DSRLB_MAX_LCORE = RTE_MAX_LCORE,
	DSRLB_ETH_NAME_MAX_LEN = RTE_ETH_NAME_MAX_LEN,
};

/* ---- EAL ---- */

static inline int dsrlb_eal_init(int argc, uintptr_t argv, int *err)
{
	int rc = rte_eal_init(argc, (char **)argv);
	*err = rc < 0 ? rte_errno : 0;
	return rc;
}

/* Registers the mbuf dynamic field that Free uses to chain mbufs. */
static inline int dsrlb_register_free_link(int *err)
{
	static const struct rte_mbuf_dynfield desc = {
		.name = "dsrlb_free_link",
		.size = sizeof(uintptr_t),
		.align = __alignof__(uintptr_t),
	};
	int off = rte_mbuf_dynfield_register(&desc);
	*err = off < 0 ? rte_errno : 0;
	return off;
}

/* ---- mempool and mbuf ---- */

static inline struct rte_mempool *dsrlb_pool_create(const char *name, unsigned int n,
	unsigned int cache, uint16_t data_room, int socket, int *err)
{
	struct rte_mempool *mp = rte_pktmbuf_pool_create(name, n, cache, 0, data_room, socket);
	*err = mp == NULL ? rte_errno : 0;
	return mp;
}

static inline uintptr_t dsrlb_mbuf_alloc(uintptr_t pool)
{
	return (uintptr_t)rte_pktmbuf_alloc((struct rte_mempool *)pool);
}

static inline void dsrlb_mbuf_free(uintptr_t m)
{
	rte_pktmbuf_free((struct rte_mbuf *)m);
}

/* Takes n mbufs from pool into the array arr, all or none: 0 or a negative errno. */
static inline int dsrlb_mbuf_alloc_bulk(uintptr_t pool, uintptr_t arr, unsigned int n)
{
	return rte_pktmbuf_alloc_bulk((struct rte_mempool *)pool, (struct rte_mbuf **)arr, n);
}

/* Allocates a zeroed array of n mbuf pointers (any NUMA socket). */
static inline uintptr_t dsrlb_ptr_array(unsigned int n)
{
	return (uintptr_t)rte_zmalloc("dsrlb_ptrs", n * sizeof(struct rte_mbuf *), RTE_CACHE_LINE_SIZE);
}

static inline uint16_t dsrlb_pool_data_room(uintptr_t pool)
{
	return rte_pktmbuf_data_room_size((struct rte_mempool *)pool);
}

/*
 * Frees n mbufs chained through the dynamic field at byte offset off: Go
 * writes each mbuf's successor there, so one call frees a whole burst
 * without Go passing an array to C.
 */
static inline void dsrlb_free_chain(uintptr_t head, unsigned int n, int off)
{
	struct rte_mbuf *batch[64];
	struct rte_mbuf *m = (struct rte_mbuf *)head;
	unsigned int k = 0;

	while (m != NULL && n-- > 0) {
		batch[k++] = m;
		m = *RTE_MBUF_DYNFIELD(m, off, struct rte_mbuf **);
		if (k == RTE_DIM(batch)) {
			rte_pktmbuf_free_bulk(batch, k);
			k = 0;
		}
	}
	if (k > 0)
		rte_pktmbuf_free_bulk(batch, k);
}

/* ---- ethdev fast path ---- */

static inline uint16_t dsrlb_rx_burst(uint16_t port, uint16_t q, uintptr_t pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, q, (struct rte_mbuf **)pkts, n);
}

static inline uint16_t dsrlb_tx_burst(uint16_t port, uint16_t q, uintptr_t pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, q, (struct rte_mbuf **)pkts, n);
}

/* ---- ethdev control ---- */

static inline int dsrlb_dev_probe(const char *devargs)
{
	return rte_dev_probe(devargs);
}

/* Default RSS hash: IPv4/IPv6 addresses plus TCP and UDP ports. */
static const uint64_t dsrlb_rss_default = RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP;

/*
 * Configures port with nb_rx/nb_tx queues. With more than one rx queue it
 * asks for RSS over want (0: dsrlb_rss_default) masked by what the device
 * supports and stores the hash functions in use in *rss. mtu 0 keeps the
 * device default. No rx offload is enabled; VLAN strip MUST stay off: the
 * pipeline reads 802.1Q tags in the frame and L2 DSR sends them on
 * (net_af_packet then puts back the tag the kernel took off).
 */
static inline int dsrlb_port_configure(uint16_t port, uint16_t nb_rx, uint16_t nb_tx,
	uint64_t want, uint16_t mtu, uint64_t *rss)
{
	struct rte_eth_dev_info info;
	struct rte_eth_conf conf;
	int rc;

	*rss = 0;
	rc = rte_eth_dev_info_get(port, &info);
	if (rc != 0)
		return rc;
	memset(&conf, 0, sizeof(conf));
	conf.rxmode.mtu = mtu;
	if (nb_rx > 1) {
		uint64_t hf = (want != 0 ? want : dsrlb_rss_default) & info.flow_type_rss_offloads;
		if (hf != 0) {
			conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
			conf.rx_adv_conf.rss_conf.rss_hf = hf;
			*rss = hf;
		}
	}
	return rte_eth_dev_configure(port, nb_rx, nb_tx, &conf);
}

/*
 * Sets up all queues with *rxd / *txd descriptors (adjusted to the device
 * limits); rx queue q takes its mbufs from pools[q % npools].
 */
static inline int dsrlb_queues_setup(uint16_t port, uint16_t nb_rx, uint16_t nb_tx,
	uint16_t *rxd, uint16_t *txd, struct rte_mempool **pools, unsigned int npools)
{
	int socket = rte_eth_dev_socket_id(port);
	int rc;
	uint16_t q;

	if (socket < 0)
		socket = SOCKET_ID_ANY;
	rc = rte_eth_dev_adjust_nb_rx_tx_desc(port, rxd, txd);
	if (rc != 0)
		return rc;
	for (q = 0; q < nb_rx; q++) {
		rc = rte_eth_rx_queue_setup(port, q, *rxd, socket, NULL, pools[q % npools]);
		if (rc != 0)
			return rc;
	}
	for (q = 0; q < nb_tx; q++) {
		rc = rte_eth_tx_queue_setup(port, q, *txd, socket, NULL);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* Allocates one zeroed burst array of n mbuf pointers near port's NUMA node. */
static inline uintptr_t dsrlb_burst_array(uint16_t port, unsigned int n)
{
	int socket = rte_eth_dev_socket_id(port);

	if (socket < 0)
		socket = SOCKET_ID_ANY;
	return (uintptr_t)rte_zmalloc_socket("dsrlb_burst", n * sizeof(struct rte_mbuf *),
		RTE_CACHE_LINE_SIZE, socket);
}

static inline void dsrlb_free_mem(uintptr_t p)
{
	rte_free((void *)p);
}

/* Returns the MAC address in the low 48 bits, first byte most significant. */
static inline int dsrlb_mac(uint16_t port, uint64_t *mac)
{
	struct rte_ether_addr a;
	int rc = rte_eth_macaddr_get(port, &a);
	int i;

	*mac = 0;
	if (rc != 0)
		return rc;
	for (i = 0; i < RTE_ETHER_ADDR_LEN; i++)
		*mac = *mac << 8 | a.addr_bytes[i];
	return 0;
}

static inline int dsrlb_link(uint16_t port, int *up, uint32_t *speed, int *duplex, int *autoneg)
{
	struct rte_eth_link link;
	int rc;

	memset(&link, 0, sizeof(link));
	rc = rte_eth_link_get_nowait(port, &link);
	*up = link.link_status;
	*speed = link.link_speed;
	*duplex = link.link_duplex;
	*autoneg = link.link_autoneg;
	return rc;
}

struct dsrlb_info {
	const char *driver_name;
	uint32_t if_index;
	uint16_t min_mtu, max_mtu;
	uint32_t max_rx_pktlen;
	uint16_t max_rx_queues, max_tx_queues;
	uint64_t flow_type_rss_offloads;
	int socket;
};

static inline int dsrlb_info(uint16_t port, struct dsrlb_info *out)
{
	struct rte_eth_dev_info info;
	int rc = rte_eth_dev_info_get(port, &info);

	if (rc != 0)
		return rc;
	out->driver_name = info.driver_name;
	out->if_index = info.if_index;
	out->min_mtu = info.min_mtu;
	out->max_mtu = info.max_mtu;
	out->max_rx_pktlen = info.max_rx_pktlen;
	out->max_rx_queues = info.max_rx_queues;
	out->max_tx_queues = info.max_tx_queues;
	out->flow_type_rss_offloads = info.flow_type_rss_offloads;
	out->socket = rte_eth_dev_socket_id(port);
	return 0;
}

/*
 * Closes port and removes (hot-unplugs) its device, so that the same devargs
 * can be probed again.
 */
static inline int dsrlb_port_close(uint16_t port)
{
	struct rte_eth_dev_info info;
	struct rte_device *dev = NULL;
	int rc;

	if (rte_eth_dev_info_get(port, &info) == 0)
		dev = info.device;
	rc = rte_eth_dev_close(port);
	if (rc != 0)
		return rc;
	if (dev != NULL)
		rc = rte_dev_remove(dev);
	return rc;
}

#endif /* DSRLB_DPDK_H */
