/* A minimal polling virtio-vsock driver (virtio-mmio version 2) for the test guest, to hand the device's host
 * side bad input as raw packets. Command-line word `vsockbad`: set up the first socket device (queues of 32,
 * no interrupts), then
 *   1. an RW packet, a CREDIT_UPDATE with absurd credit and an RST, each for a connection that does not
 *      exist: the first two get an RST back ("vsock: rst for port 1000/1001"), the RST none
 *   2. a header claiming 1000 bytes in a 44-byte chain: reset ("vsock: rst for port 1002")
 *   3. a packet from another CID, and a REQUEST for CID 9 (not the host): dropped (nothing comes back)
 *   4. a REQUEST to host port 7777, where nobody listens: "vsock: rst for port 1004" (coming right after 2.,
 *      it also shows that the two of 3. got no answer)
 *   5. "vsock: waiting for CONNECT 5": the host connects to port 5 and writes; we answer RESPONSE with a
 *      fwd_cnt ahead of anything sent (bogus credit) and count what arrives for a while ("vsock: N bytes
 *      with bogus credit"), then give 4096 bytes of credit and count again ("vsock: N bytes with 4096
 *      credit"), then reset the connection
 * and print "vsock: done". Any device misbehaviour prints "vsock: error ..." and exits with 78.
 */
#include <stdint.h>

void net_puts(const char *s);
void net_putu(uint64_t v);
void net_die(uint8_t code);

#define Q 32
#define BUF 4096
#define MEM_BASE 0xc00000ull /* rings and buffers live here, outside the image and virtio_net.c's area */
#define DEV_VSOCK 19

#include "virtio_mmio.h"

struct hdr {
    uint64_t src_cid, dst_cid;
    uint32_t src_port, dst_port, len;
    uint16_t type, op;
    uint32_t flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

enum { OP_REQUEST = 1, OP_RESPONSE, OP_RST, OP_SHUTDOWN, OP_RW, OP_CREDIT_UPDATE, OP_CREDIT_REQUEST };

static uint64_t base, cid;
static struct queue *rxq, *txq, *evq;
static uint8_t *rxb, *txb;
static uint16_t rx_seen, tx_seen;
static uint8_t rbuf[BUF]; /* the last packet received (the stack is only 16 KiB) */

static inline volatile uint32_t *reg(uint32_t off) { return mmio_reg(base, off); }
static inline uint64_t rdtsc(void) {
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

static void fail(const char *what) {
    net_puts("vsock: error ");
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
    barrier();
    *reg(0x050) = 0;
}

static void init(const char *cmdline) {
    base = virtio_find_device(cmdline, DEV_VSOCK);
    if (!base) fail("no virtio-vsock device on the command line");
    rxq = (struct queue *)MEM_BASE;
    txq = rxq + 1;
    evq = rxq + 2;
    rxb = (uint8_t *)(rxq + 3);
    txb = rxb + Q * BUF;
    uint8_t *z = (uint8_t *)MEM_BASE;
    for (uint64_t i = 0; i < 3 * sizeof(struct queue); i++) z[i] = 0;
    *reg(0x070) = 0;
    *reg(0x070) = 1;
    *reg(0x070) = 1 | 2;
    *reg(0x014) = 1;
    if (!(*reg(0x010) & 1)) fail("no VERSION_1");
    *reg(0x024) = 1; *reg(0x020) = 1;
    *reg(0x024) = 0; *reg(0x020) = 0;
    *reg(0x070) = 1 | 2 | 8;
    if (!(*reg(0x070) & 8)) fail("FEATURES_OK refused");
    cid = *(volatile uint32_t *)(base + 0x100) | (uint64_t)*(volatile uint32_t *)(base + 0x104) << 32;
    setup_queue(0, rxq);
    setup_queue(1, txq);
    setup_queue(2, evq);
    *reg(0x070) = 1 | 2 | 8 | 4;
    if (*reg(0x070) & 0x40) fail("device needs reset");
    rxq->a.flags = txq->a.flags = evq->a.flags = 1; /* we poll */
    for (uint16_t i = 0; i < Q; i++) {
        rxq->d[i] = (struct desc){(uint64_t)(rxb + (uint64_t)i * BUF), BUF, 2, 0};
        post_rx(i);
    }
    net_puts("vsock: cid ");
    net_putu(cid);
    net_puts("\n");
}

/* Sends `len` bytes of `pkt` as one descriptor and waits until the device took it. */
static void send_raw(const void *pkt, uint32_t len) {
    uint16_t slot = txq->a.idx % Q;
    uint8_t *b = txb + (uint64_t)slot * BUF;
    for (uint32_t i = 0; i < len; i++) b[i] = ((const uint8_t *)pkt)[i];
    txq->d[slot] = (struct desc){(uint64_t)b, len, 0, 0};
    txq->a.ring[slot] = slot;
    barrier();
    txq->a.idx++;
    barrier();
    *reg(0x050) = 1;
    uint64_t t0 = rdtsc();
    while (*(volatile uint16_t *)&txq->u.idx == tx_seen)
        if (rdtsc() - t0 > 20000000000ull) fail("transmit not completed");
    tx_seen++;
}

static struct hdr mk(uint16_t op, uint32_t src_port, uint32_t dst_port, uint32_t len) {
    struct hdr h = {cid, 2, src_port, dst_port, len, 1, op, 0, 65536, 0};
    return h;
}

/* The next packet from the device within about `cycles` TSC ticks, copied into `out` (header first);
 * 0 when none came. */
static uint32_t recv_pkt(uint8_t *out, uint64_t cycles) {
    uint64_t t0 = rdtsc();
    while (*(volatile uint16_t *)&rxq->u.idx == rx_seen)
        if (rdtsc() - t0 > cycles) return 0;
    barrier();
    uint32_t id = rxq->u.ring[rx_seen % Q].id, len = rxq->u.ring[rx_seen % Q].len;
    rx_seen++;
    if (id >= Q || len > BUF) fail("bad used entry");
    for (uint32_t i = 0; i < len; i++) out[i] = rxb[(uint64_t)id * BUF + i];
    post_rx((uint16_t)id);
    return len;
}

static void expect_rst(uint32_t port) {
    uint8_t *b = rbuf;
    struct hdr *h = (struct hdr *)b;
    if (recv_pkt(b, 20000000000ull) < sizeof(struct hdr)) fail("no answer");
    if (h->op != OP_RST || h->dst_port != port || h->dst_cid != cid) fail("not the expected RST");
    net_puts("vsock: rst for port ");
    net_putu(port);
    net_puts("\n");
}

/* Counts the payload bytes of RW packets for our port 5 arriving within `cycles`. */
static uint64_t count_rw(uint64_t cycles) {
    uint8_t *b = rbuf;
    struct hdr *h = (struct hdr *)b;
    uint64_t total = 0, t0 = rdtsc();
    while (rdtsc() - t0 < cycles) {
        uint32_t n = recv_pkt(b, cycles / 4);
        if (n >= sizeof(struct hdr) && h->op == OP_RW && h->dst_port == 5) total += h->len;
    }
    return total;
}

void vsock_command(const char *cmdline) {
    init(cmdline);
    struct hdr h = mk(OP_RW, 1000, 2000, 3);
    uint8_t pkt[64];
    for (int i = 0; i < (int)sizeof h; i++) pkt[i] = ((uint8_t *)&h)[i];
    pkt[44] = 'a'; pkt[45] = 'b'; pkt[46] = 'c';
    send_raw(pkt, 47);
    expect_rst(1000);
    h = mk(OP_CREDIT_UPDATE, 1001, 2000, 0);
    h.buf_alloc = 0xffffffffu; h.fwd_cnt = 0xfffffff0u;
    send_raw(&h, sizeof h);
    expect_rst(1001);
    h = mk(OP_RST, 1009, 2000, 0);
    send_raw(&h, sizeof h);
    h = mk(OP_RW, 1002, 2000, 1000);
    send_raw(&h, sizeof h);
    expect_rst(1002);
    h = mk(OP_REQUEST, 1003, 2000, 0);
    h.src_cid = cid + 1;
    send_raw(&h, sizeof h);
    h = mk(OP_REQUEST, 1005, 2000, 0);
    h.dst_cid = 9;
    send_raw(&h, sizeof h);
    h = mk(OP_REQUEST, 1004, 7777, 0);
    send_raw(&h, sizeof h);
    expect_rst(1004);

    net_puts("vsock: waiting for CONNECT 5\n");
    uint8_t *b = rbuf;
    struct hdr *r = (struct hdr *)b;
    if (recv_pkt(b, 200000000000ull) < sizeof(struct hdr)) fail("no REQUEST");
    if (r->op != OP_REQUEST || r->dst_port != 5) fail("not a REQUEST for port 5");
    uint32_t host_port = r->src_port;
    h = mk(OP_RESPONSE, 5, host_port, 0);
    h.buf_alloc = 0xffffffffu;
    h.fwd_cnt = 0x80000000u; /* far ahead of the nothing we were sent */
    send_raw(&h, sizeof h);
    uint64_t got = count_rw(6000000000ull);
    net_puts("vsock: ");
    net_putu(got);
    net_puts(" bytes with bogus credit\n");
    h = mk(OP_CREDIT_UPDATE, 5, host_port, 0);
    h.buf_alloc = 4096;
    h.fwd_cnt = 0;
    send_raw(&h, sizeof h);
    got = count_rw(6000000000ull);
    net_puts("vsock: ");
    net_putu(got);
    net_puts(" bytes with 4096 credit\n");
    h = mk(OP_RST, 5, host_port, 0);
    send_raw(&h, sizeof h);
    net_puts("vsock: done\n");
}
