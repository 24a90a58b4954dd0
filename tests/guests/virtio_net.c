/* A minimal polling virtio-net driver (virtio-mmio version 2) for the test guest: it finds the first network
 * device among the command line's virtio_mmio.device= entries (microvm's and QEMU's -M microvm,acpi=off),
 * uses one receive and one transmit queue of 32 entries, no interrupts (it polls, and says so with
 * VRING_AVAIL_F_NO_INTERRUPT). Command-line words:
 *   netecho     answer ARP requests and ICMP echo requests for our address, and send every UDP datagram to
 *               our address back to its sender (addresses and ports swapped, payload untouched); a datagram to
 *               port 9 ends the loop ("net: stop ..." with the frame and byte counts)
 *   netnorx     set the device up but never post a receive buffer, then go on with the other commands
 *   netbad      post malformed chains: a device-readable and an out-of-memory receive buffer before a good
 *               one, and three bad transmit chains (device-writable, out of memory, too short); wait until
 *               the device has returned all of them (the receive ones as the host sends three frames) and
 *               print their used lengths; a later netecho resets the device and starts over
 *   netip=A.B.C.D  our IPv4 address (default 10.0.0.2)
 *   netbuf=N    receive buffer size, 64 to 2048 (default 2048); small buffers force MRG_RXBUF merging
 *   netnomrg    do not negotiate MRG_RXBUF (then every buffer must hold a whole frame)
 * A transmitted frame is sent from the very buffers it arrived in (one descriptor per receive buffer), which
 * go back to the receive queue once the device has used them. Any device misbehaviour prints
 * "net: error ..." and exits through debug-exit with 78.
 */
#include <stdint.h>

void net_puts(const char *s);
void net_putu(uint64_t v);
void net_die(uint8_t code);
const char *net_find(const char *key);

#define Q 32
#define MEM_BASE 0x800000ull /* buffers and rings live here, outside the image */
#define DEV_NET 1

#include "virtio_mmio.h"

static uint64_t base;
static struct queue *rxq, *txq;
static uint8_t *bufs;
static uint32_t nb = 2048;
static int mrg;
static uint8_t mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
static uint8_t ip[4] = {10, 0, 0, 2};
static uint16_t rx_seen, tx_seen;
static uint64_t rx_frames, rx_bytes, tx_frames, tx_bytes;

static inline volatile uint32_t *reg(uint32_t off) { return mmio_reg(base, off); }
static inline uint16_t vread16(volatile uint16_t *p) { return *p; }

static void fail(const char *what) {
    net_puts("net: error ");
    net_puts(what);
    net_puts("\n");
    net_die(78);
}

static void setup_queue(uint32_t index, struct queue *q) {
    if (virtio_setup_queue(base, index, q) < 0) fail("queue too small");
}

static void post_rx(uint16_t b) {
    rxq->a.ring[rxq->a.idx % Q] = b;
    barrier();
    rxq->a.idx++;
}

static void parse_ip(const char *s) {
    for (int i = 0; i < 4; i++) {
        uint32_t v = 0;
        while (*s >= '0' && *s <= '9') v = v * 10 + (uint32_t)(*s++ - '0');
        ip[i] = (uint8_t)v;
        if (*s == '.') s++;
    }
}

/* Resets and sets up the device; posts every receive buffer unless `post`. */
static void net_init(const char *cmdline, int post) {
    base = virtio_find_device(cmdline, DEV_NET);
    if (!base) fail("no virtio-net device on the command line");
    const char *v;
    if ((v = net_find("netbuf"))) {
        nb = 0;
        while (*v >= '0' && *v <= '9') nb = nb * 10 + (uint32_t)(*v++ - '0');
        if (nb < 64 || nb > 2048) fail("netbuf must be 64 to 2048");
    }
    if ((v = net_find("netip"))) parse_ip(v);
    rx_seen = tx_seen = 0;
    rxq = (struct queue *)MEM_BASE;
    txq = (struct queue *)(MEM_BASE + sizeof(struct queue));
    bufs = (uint8_t *)(MEM_BASE + 2 * sizeof(struct queue));
    uint8_t *z = (uint8_t *)MEM_BASE;
    for (uint64_t i = 0; i < 2 * sizeof(struct queue); i++) z[i] = 0;

    *reg(0x070) = 0;
    *reg(0x070) = 1;
    *reg(0x070) = 1 | 2;
    *reg(0x014) = 0;
    uint32_t f0 = *reg(0x010);
    *reg(0x014) = 1;
    uint32_t f1 = *reg(0x010);
    if (!(f1 & 1)) fail("no VERSION_1");
    uint32_t want = f0 & ((1u << 5) | (1u << 16)); /* MAC, STATUS */
    if (!net_find("netnomrg")) want |= f0 & (1u << 15);
    mrg = (want >> 15) & 1;
    if (!mrg && nb < 1526) fail("buffers under 1526 bytes need MRG_RXBUF");
    *reg(0x024) = 1; *reg(0x020) = 1;
    *reg(0x024) = 0; *reg(0x020) = want;
    *reg(0x070) = 1 | 2 | 8;
    if (!(*reg(0x070) & 8)) fail("FEATURES_OK refused");
    if (want & (1u << 5))
        for (int i = 0; i < 6; i++) mac[i] = *(volatile uint8_t *)(base + 0x100 + (uint64_t)i);
    setup_queue(0, rxq);
    setup_queue(1, txq);
    *reg(0x070) = 1 | 2 | 8 | 4;
    if (*reg(0x070) & 0x40) fail("device needs reset");
    rxq->a.flags = txq->a.flags = 1; /* VRING_AVAIL_F_NO_INTERRUPT: we poll */
    for (uint16_t i = 0; i < Q; i++) rxq->d[i] = (struct desc){(uint64_t)(bufs + (uint64_t)i * nb), nb, 2, 0};
    if (post) {
        for (uint16_t i = 0; i < Q; i++) post_rx(i);
        *reg(0x050) = 0;
    }
}

static int eq(const uint8_t *a, const uint8_t *b, int n) {
    for (int i = 0; i < n; i++) if (a[i] != b[i]) return 0;
    return 1;
}
static void cp(uint8_t *d, const uint8_t *s, int n) { for (int i = 0; i < n; i++) d[i] = s[i]; }
static void swap(uint8_t *a, uint8_t *b, int n) {
    for (int i = 0; i < n; i++) { uint8_t t = a[i]; a[i] = b[i]; b[i] = t; }
}

enum { DROP, SEND, STOP };

/* Turns a request in frame `f` (of which `n` bytes are in the first buffer) into its answer, in place. */
static int answer(uint8_t *f, uint32_t n) {
    if (n < 42) return DROP;
    uint16_t type = (uint16_t)(f[12] << 8 | f[13]);
    if (type == 0x0806) {
        uint8_t *a = f + 14;
        if (a[7] != 1 || !eq(a + 24, ip, 4)) return DROP; /* op: request, for us */
        cp(f, f + 6, 6);
        cp(f + 6, mac, 6);
        a[7] = 2;
        cp(a + 18, a + 8, 10); /* target = the asker */
        cp(a + 8, mac, 6);
        cp(a + 14, ip, 4);
        return SEND;
    }
    if (type != 0x0800) return DROP;
    uint8_t *h = f + 14;
    uint32_t ihl = (uint32_t)(h[0] & 15) * 4;
    if (ihl < 20 || n < 14 + ihl + 8 || !eq(h + 16, ip, 4)) return DROP;
    uint8_t *l4 = h + ihl;
    if (h[9] == 17) {
        if (l4[2] == 0 && l4[3] == 9) return STOP;
        swap(l4, l4 + 2, 2);
    } else if (h[9] == 1 && l4[0] == 8) {
        l4[0] = 0;
        /* RFC 1624: HC' = ~(~HC + ~m + m'), m = 0x0800 (type 8, code 0), m' = 0 */
        uint32_t s = (uint16_t)~(l4[2] << 8 | l4[3]);
        s += 0xf7ff;
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = ~s & 0xffff;
        l4[2] = (uint8_t)(s >> 8);
        l4[3] = (uint8_t)s;
    } else {
        return DROP;
    }
    swap(h + 12, h + 16, 4);
    cp(f, f + 6, 6);
    cp(f + 6, mac, 6);
    return SEND;
}

/* Receive buffers the device has finished sending go back to the receive queue. */
static void reclaim_tx(void) {
    int posted = 0;
    while (tx_seen != vread16(&txq->u.idx)) {
        uint32_t id = txq->u.ring[tx_seen % Q].id;
        for (int k = 0; k < Q; k++) {
            if (id >= Q) fail("bad transmit used id");
            uint16_t fl = txq->d[id].flags;
            post_rx((uint16_t)id);
            posted = 1;
            if (!(fl & 1)) break;
            id = txq->d[id].next;
        }
        tx_seen++;
    }
    if (posted) *reg(0x050) = 0;
}

static void net_echo(const char *cmdline) {
    net_init(cmdline, 1);
    net_puts("net: echo ready mrg=");
    net_putu((uint64_t)mrg);
    net_puts("\n");
    uint16_t ids[Q];
    uint32_t lens[Q];
    for (;;) {
        reclaim_tx();
        if (rx_seen == vread16(&rxq->u.idx)) { __asm__ volatile("pause"); continue; }
        barrier();
        uint32_t b0 = rxq->u.ring[rx_seen % Q].id, len0 = rxq->u.ring[rx_seen % Q].len;
        if (b0 >= Q || len0 > nb || len0 < 12) fail("bad receive used entry");
        uint8_t *p = bufs + (uint64_t)b0 * nb;
        uint16_t n = mrg ? (uint16_t)(p[10] | p[11] << 8) : 1;
        if (n < 1 || n > Q) fail("bad num_buffers");
        while ((uint16_t)(vread16(&rxq->u.idx) - rx_seen) < n) __asm__ volatile("pause");
        barrier();
        uint32_t total = 0;
        for (uint16_t i = 0; i < n; i++) {
            ids[i] = (uint16_t)rxq->u.ring[(uint16_t)(rx_seen + i) % Q].id;
            lens[i] = rxq->u.ring[(uint16_t)(rx_seen + i) % Q].len;
            if (ids[i] >= Q || lens[i] > nb) fail("bad receive used entry");
            total += lens[i];
        }
        rx_seen = (uint16_t)(rx_seen + n);
        rx_frames++;
        rx_bytes += total - 12;
        int what = answer(p + 12, len0 - 12);
        if (what == SEND) {
            for (uint16_t i = 0; i < n; i++) {
                txq->d[ids[i]] = (struct desc){(uint64_t)(bufs + (uint64_t)ids[i] * nb), lens[i],
                                               (uint16_t)(i + 1 < n ? 1 : 0), i + 1 < n ? ids[i + 1] : 0};
            }
            txq->a.ring[txq->a.idx % Q] = ids[0];
            barrier();
            txq->a.idx++;
            barrier();
            *reg(0x050) = 1;
            tx_frames++;
            tx_bytes += total - 12;
        } else {
            for (uint16_t i = 0; i < n; i++) post_rx(ids[i]);
            *reg(0x050) = 0;
        }
        if (what == STOP) break;
    }
    net_puts("net: stop rx ");
    net_putu(rx_frames);
    net_puts(" frames ");
    net_putu(rx_bytes);
    net_puts(" bytes, tx ");
    net_putu(tx_frames);
    net_puts(" frames ");
    net_putu(tx_bytes);
    net_puts(" bytes\n");
}

#define NOWHERE 0xfff0000000ull /* far beyond any test guest's RAM */

static void net_bad(const char *cmdline) {
    net_init(cmdline, 0);
    rxq->d[0].flags = 0;        /* device-readable */
    rxq->d[1].addr = NOWHERE;
    for (uint16_t i = 0; i < 3; i++) post_rx(i);
    *reg(0x050) = 0;
    txq->d[0] = (struct desc){(uint64_t)bufs, 64, 2, 0}; /* device-writable */
    txq->d[1] = (struct desc){NOWHERE, 64, 0, 0};
    txq->d[2] = (struct desc){(uint64_t)bufs, 20, 0, 0}; /* shorter than the two headers */
    for (uint16_t i = 0; i < 3; i++) txq->a.ring[i] = i;
    barrier();
    txq->a.idx = 3;
    barrier();
    *reg(0x050) = 1;
    net_puts("net: bad chains posted\n");
    while (vread16(&txq->u.idx) != 3 || vread16(&rxq->u.idx) != 3) __asm__ volatile("pause");
    barrier();
    net_puts("net: bad chains returned, rx lengths");
    for (int i = 0; i < 3; i++) { net_puts(" "); net_putu(rxq->u.ring[i].len); }
    net_puts(", tx lengths");
    for (int i = 0; i < 3; i++) { net_puts(" "); net_putu(txq->u.ring[i].len); }
    net_puts("\n");
}

/* what: 0 = netnorx, 1 = netecho, 2 = netbad */
void net_command(const char *cmdline, int what) {
    if (what == 1) {
        net_echo(cmdline);
    } else if (what == 2) {
        net_bad(cmdline);
    } else {
        net_init(cmdline, 0);
        net_puts("net: up without receive buffers\n");
    }
}
