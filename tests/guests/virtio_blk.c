/* A minimal polling virtio-blk driver (virtio-mmio version 2) for the test guest: the first device on the
 * command line's virtio_mmio.device= list (microvm puts it at 0xd0000000), one 8-entry queue, one request
 * at a time, no interrupts. Used by the disk integration tests:
 *   blkwrite=S  write one sector of pattern (byte i = S + i) at sector S, then FLUSH
 *   blkread=S   read sector S and print its first 8 bytes in hex
 *   (memwalk)   guest.c reads sectors into pages of its own with blk_read_to
 *   blkloop=N   write sectors 1..N in turn, each filled with its number (64-bit words), no flush, and print
 *               "blk: acked N" as each completes (a stream of I/O to snapshot in the middle of)
 *   blkbulk=N   read N 64 KiB requests from sector 0 on, one at a time, between "blk: bulk start" and
 *               "blk: bulk done" (the host times the rate limiter by these lines)
 * Prints "blk: ..." lines; on any failure prints "blk: error ..." and exits through debug-exit with 77.
 */
#include <stdint.h>

void blk_puts(const char *s);
void blk_puthex(uint64_t v);
void blk_die(uint8_t code);

#define MMIO_BASE 0xd0000000ull
#define QSIZE 8

static inline volatile uint32_t *reg(uint32_t off) { return (volatile uint32_t *)(MMIO_BASE + off); }
static inline void barrier(void) { __asm__ volatile("mfence" ::: "memory"); }

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
static struct desc descs[QSIZE] __attribute__((aligned(16)));
static struct { uint16_t flags, idx, ring[QSIZE], used_event; } avail __attribute__((aligned(16)));
static struct { uint16_t flags, idx; struct { uint32_t id, len; } ring[QSIZE]; uint16_t avail_event; } used
    __attribute__((aligned(16)));
static struct { uint32_t type, reserved; uint64_t sector; } hdr;
static uint8_t data[512] __attribute__((aligned(512)));
#define BULK_LEN 65536
static uint8_t bulk[BULK_LEN] __attribute__((aligned(4096)));
static volatile uint8_t status;
static int ready;

static void fail(const char *what) {
    blk_puts("blk: error ");
    blk_puts(what);
    blk_puts("\n");
    blk_die(77);
}

static void init(void) {
    if (*reg(0x000) != 0x74726976 || *reg(0x004) != 2 || *reg(0x008) != 2) fail("no virtio-blk at 0xd0000000");
    *reg(0x070) = 0;
    *reg(0x070) = 1;
    *reg(0x070) = 1 | 2;
    *reg(0x024) = 1; *reg(0x020) = 1;        /* VERSION_1 */
    *reg(0x024) = 0; *reg(0x020) = 1u << 9;  /* FLUSH */
    *reg(0x070) = 1 | 2 | 8;
    if (!(*reg(0x070) & 8)) fail("FEATURES_OK refused");
    *reg(0x030) = 0;
    if (*reg(0x034) < QSIZE) fail("queue too small");
    *reg(0x038) = QSIZE;
    uint64_t d = (uint64_t)descs, a = (uint64_t)&avail, u = (uint64_t)&used;
    *reg(0x080) = (uint32_t)d; *reg(0x084) = (uint32_t)(d >> 32);
    *reg(0x090) = (uint32_t)a; *reg(0x094) = (uint32_t)(a >> 32);
    *reg(0x0a0) = (uint32_t)u; *reg(0x0a4) = (uint32_t)(u >> 32);
    *reg(0x044) = 1;
    *reg(0x070) = 1 | 2 | 8 | 4;
    if (*reg(0x070) & 0x40) fail("device needs reset");
    ready = 1;
}

/* type: 0 = IN, 1 = OUT, 4 = FLUSH, on `len` bytes at `buf`. Returns the status byte. */
static uint8_t request_on(uint32_t type, uint64_t sector, uint8_t *buf, uint32_t len) {
    if (!ready) init();
    hdr.type = type; hdr.reserved = 0; hdr.sector = sector;
    status = 0xff;
    descs[0] = (struct desc){(uint64_t)&hdr, 16, 1, 1};
    if (type == 4) {
        descs[0].next = 2;
    } else {
        descs[1] = (struct desc){(uint64_t)buf, len, (uint16_t)(1 | (type == 0 ? 2 : 0)), 2};
    }
    descs[2] = (struct desc){(uint64_t)&status, 1, 2, 0};
    uint16_t expect = (uint16_t)(used.idx + 1);
    avail.ring[avail.idx % QSIZE] = 0;
    barrier();
    avail.idx++;
    barrier();
    *reg(0x050) = 0;
    while (*(volatile uint16_t *)&used.idx != expect) __asm__ volatile("pause");
    *reg(0x064) = *reg(0x060); /* acknowledge, though we poll */
    return status;
}

static uint8_t request(uint32_t type, uint64_t sector) { return request_on(type, sector, data, 512); }

/* Reads sector S into `buf` (the device writes guest RAM there; the guest does not). */
void blk_read_to(uint64_t sector, uint8_t *buf) {
    if (request_on(0, sector, buf, 512) != 0) fail("read");
}

void blk_write(uint64_t sector) {
    for (int i = 0; i < 512; i++) data[i] = (uint8_t)(sector + (uint64_t)i);
    if (request(1, sector) != 0) fail("write");
    if (request(4, 0) != 0) fail("flush");
    blk_puts("blk: written and flushed sector ");
    blk_puthex(sector);
    blk_puts("\n");
}

void blk_read(uint64_t sector) {
    if (request(0, sector) != 0) fail("read");
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | data[i];
    blk_puts("blk: read sector ");
    blk_puthex(sector);
    blk_puts(": ");
    blk_puthex(v);
    blk_puts("\n");
}

void blk_loop(uint64_t count) {
    for (uint64_t n = 1; n <= count; n++) {
        for (int i = 0; i < 512; i += 8) *(volatile uint64_t *)&data[i] = n;
        if (request(1, n) != 0) fail("write");
        blk_puts("blk: acked ");
        blk_puthex(n);
        blk_puts("\n");
    }
    blk_puts("blk: loop done\n");
}

void blk_bulk(uint64_t count) {
    blk_puts("blk: bulk start\n");
    for (uint64_t n = 0; n < count; n++)
        if (request_on(0, n * (BULK_LEN / 512), bulk, BULK_LEN) != 0) fail("bulk read");
    blk_puts("blk: bulk done ");
    blk_puthex(count);
    blk_puts("\n");
}
