/* ct_shim: exported wrappers for DPDK's static inline functions, so that Rust
 * can call them through FFI. Each is a one-line forward; see ct_shim.c. */
#ifndef CT_SHIM_H
#define CT_SHIM_H

#include <stdint.h>
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_version.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ethdev.h>
#include <rte_dev.h>
#include <rte_telemetry.h>
#include <rte_pdump.h>
#include <rte_ring.h>

uint16_t ct_shim_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t ct_shim_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts, uint16_t nb_pkts);
struct rte_mbuf *ct_shim_pktmbuf_alloc(struct rte_mempool *mp);
void ct_shim_pktmbuf_free(struct rte_mbuf *m);
void *ct_shim_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t ct_shim_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t ct_shim_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t ct_shim_pktmbuf_tailroom(const struct rte_mbuf *m);
int ct_shim_pktmbuf_is_contiguous(const struct rte_mbuf *m);
char *ct_shim_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
int ct_shim_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
char *ct_shim_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *ct_shim_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int ct_shim_errno(void);
unsigned ct_shim_lcore_id(void);
uint64_t ct_shim_rdtsc(void);
const char *ct_shim_version(void);
struct rte_ring *ct_shim_ring_create_spsc(const char *name, unsigned count, int socket_id);
unsigned ct_shim_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);
unsigned ct_shim_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);

#endif
