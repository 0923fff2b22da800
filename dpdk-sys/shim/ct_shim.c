/* ct_shim: DPDK implements its fast-path API as static inline functions in
 * headers, which have no symbol to link against. These wrappers give each one
 * an exported symbol with the same contract as the DPDK function it forwards to. */
#include "ct_shim.h"

uint16_t ct_shim_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts, uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t ct_shim_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts, uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *ct_shim_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}

void ct_shim_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

void *ct_shim_pktmbuf_mtod(struct rte_mbuf *m)
{
	return rte_pktmbuf_mtod(m, void *);
}

uint16_t ct_shim_pktmbuf_data_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_data_len(m);
}

uint32_t ct_shim_pktmbuf_pkt_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_pkt_len(m);
}

uint16_t ct_shim_pktmbuf_tailroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_tailroom(m);
}

int ct_shim_pktmbuf_is_contiguous(const struct rte_mbuf *m)
{
	return rte_pktmbuf_is_contiguous(m);
}

char *ct_shim_pktmbuf_append(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_append(m, len);
}

int ct_shim_pktmbuf_trim(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_trim(m, len);
}

char *ct_shim_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_prepend(m, len);
}

char *ct_shim_pktmbuf_adj(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_adj(m, len);
}

int ct_shim_errno(void)
{
	return rte_errno;
}

unsigned ct_shim_lcore_id(void)
{
	return rte_lcore_id();
}

uint64_t ct_shim_rdtsc(void)
{
	return rte_rdtsc();
}

const char *ct_shim_version(void)
{
	return rte_version();
}

/* A ring with one producer and one consumer (RING_F_SP_ENQ | RING_F_SC_DEQ):
 * the flags are macros bindgen does not export. */
struct rte_ring *ct_shim_ring_create_spsc(const char *name, unsigned count, int socket_id)
{
	return rte_ring_create(name, count, socket_id, RING_F_SP_ENQ | RING_F_SC_DEQ);
}

unsigned ct_shim_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{
	return rte_ring_enqueue_burst(r, objs, n, NULL);
}

unsigned ct_shim_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{
	return rte_ring_dequeue_burst(r, objs, n, NULL);
}
