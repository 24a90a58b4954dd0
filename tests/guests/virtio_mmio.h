/* What the test guest's polling virtio-mmio drivers (virtio_net.c, virtio_vsock.c) share: split rings of Q
 * entries (each driver defines Q before including this), finding a device on the command line and
 * handing a queue to it. virtio-mmio version 2 registers; the drivers poll, so no interrupts. */
#ifndef VIRTIO_MMIO_H
#define VIRTIO_MMIO_H
#include <stdint.h>

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct avail { uint16_t flags, idx, ring[Q], used_event; };
struct used { uint16_t flags, idx; struct { uint32_t id, len; } ring[Q]; uint16_t avail_event; };
struct queue {
    struct desc d[Q];
    struct avail a;
    uint8_t pad[4096 - sizeof(struct desc) * Q - sizeof(struct avail)];
    struct used u;
} __attribute__((aligned(4096)));

static inline volatile uint32_t *mmio_reg(uint64_t base, uint32_t off) {
    return (volatile uint32_t *)(base + off);
}
static inline void barrier(void) { __asm__ volatile("mfence" ::: "memory"); }

static inline uint64_t hexnum(const char *s) {
    uint64_t v = 0;
    for (;; s++) {
        if (*s >= '0' && *s <= '9') v = v * 16 + (uint64_t)(*s - '0');
        else if (*s >= 'a' && *s <= 'f') v = v * 16 + (uint64_t)(*s - 'a' + 10);
        else if (*s >= 'A' && *s <= 'F') v = v * 16 + (uint64_t)(*s - 'A' + 10);
        else return v;
    }
}

/* The first `virtio_mmio.device=SIZE@0xADDR:IRQ` window of the command line that holds a version 2
 * device of type `id`, or 0. */
static inline uint64_t virtio_find_device(const char *cmdline, uint32_t id) {
    const char *key = "virtio_mmio.device=";
    for (const char *p = cmdline; *p; p++) {
        const char *k = key, *t = p;
        while (*k && *t == *k) { k++; t++; }
        if (*k) continue;
        while (*t && *t != '@' && *t != ' ') t++;
        if (*t != '@' || t[1] != '0' || t[2] != 'x') continue;
        uint64_t a = hexnum(t + 3);
        volatile uint32_t *r = (volatile uint32_t *)a;
        if (r[0] == 0x74726976 && r[1] == 2 && r[2] == id) return a;
    }
    return 0;
}

/* Gives queue `index` of the device at `base` the rings of `q`; 0, or -1 when the device's queue is
 * smaller than Q. */
static inline int virtio_setup_queue(uint64_t base, uint32_t index, struct queue *q) {
    *mmio_reg(base, 0x030) = index;
    if (*mmio_reg(base, 0x034) < Q) return -1;
    *mmio_reg(base, 0x038) = Q;
    uint64_t d = (uint64_t)q->d, a = (uint64_t)&q->a, u = (uint64_t)&q->u;
    *mmio_reg(base, 0x080) = (uint32_t)d; *mmio_reg(base, 0x084) = (uint32_t)(d >> 32);
    *mmio_reg(base, 0x090) = (uint32_t)a; *mmio_reg(base, 0x094) = (uint32_t)(a >> 32);
    *mmio_reg(base, 0x0a0) = (uint32_t)u; *mmio_reg(base, 0x0a4) = (uint32_t)(u >> 32);
    *mmio_reg(base, 0x044) = 1;
    return 0;
}
#endif
