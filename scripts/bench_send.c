/* The Linux kernel peer's traffic source in scripts/bench.sh: replays the
 * frames of a pcap file (loaded into memory once) round and round into a
 * network interface through an AF_PACKET socket (sendmmsg, qdisc bypassed)
 * for a number of seconds (or until FRAMES frames are out: one pass with
 * FRAMES = the capture's), then prints how many it sent.
 *
 * usage: bench_send IFACE FILE.pcap SECONDS [FRAMES]
 * build: cc -O2 -o bench_send scripts/bench_send.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#define BATCH 64

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s IFACE FILE.pcap SECONDS [FRAMES]\n", argv[0]);
        return 2;
    }
    double secs = atof(argv[3]);
    unsigned long long limit = argc == 5 ? strtoull(argv[4], NULL, 10) : 0;
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    uint32_t gh[6];
    if (fread(gh, 4, 6, f) != 6 || gh[0] != 0xA1B2C3D4) {
        fprintf(stderr, "%s: not a little-endian microsecond pcap\n", argv[2]);
        return 1;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char **frames = malloc(cap * sizeof *frames);
    uint32_t *lens = malloc(cap * sizeof *lens);
    uint32_t rh[4];
    while (fread(rh, 4, 4, f) == 4) {
        if (n == cap) {
            cap *= 2;
            frames = realloc(frames, cap * sizeof *frames);
            lens = realloc(lens, cap * sizeof *lens);
        }
        frames[n] = malloc(rh[2]);
        if (fread(frames[n], 1, rh[2], f) != rh[2])
            break;
        lens[n++] = rh[2];
    }
    fclose(f);
    if (n == 0) {
        fprintf(stderr, "%s: no frames\n", argv[2]);
        return 1;
    }

    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (s < 0) {
        perror("socket(AF_PACKET)");
        return 1;
    }
    int one = 1;
    setsockopt(s, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
    int sndbuf = 4 << 20;
    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_ll sll = {0};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = if_nametoindex(argv[1]);
    if (sll.sll_ifindex == 0 || bind(s, (struct sockaddr *)&sll, sizeof sll) < 0) {
        perror(argv[1]);
        return 1;
    }

    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    memset(msgs, 0, sizeof msgs);
    size_t next = 0;
    unsigned long long sent = 0, failed = 0;
    double start = now(), end = start + secs;
    unsigned iter = 0;
    for (;;) {
        if ((++iter & 63) == 0 && now() >= end)
            break;
        int batch = BATCH;
        if (limit) {
            if (sent + failed >= limit)
                break;
            if (limit - sent - failed < BATCH)
                batch = limit - sent - failed;
        }
        for (int i = 0; i < batch; i++) {
            iov[i].iov_base = frames[next];
            iov[i].iov_len = lens[next];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            if (++next == n)
                next = 0;
        }
        int r = sendmmsg(s, msgs, batch, 0);
        if (r < 0) {
            if (errno != ENOBUFS && errno != EAGAIN) {
                perror("sendmmsg");
                return 1;
            }
            failed += batch;
        } else {
            sent += r;
            failed += batch - r;
        }
    }
    printf("sent %llu failed %llu seconds %.3f frames %zu\n", sent, failed, now() - start, n);
    return 0;
}
