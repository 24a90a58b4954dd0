/*
 * kvm-floor: the least a VMM with KVM's in-kernel irqchip and PIT must do before its first KVM_RUN and at
 * its exit, to measure this host's floor beside microvm and QEMU (scripts/bench-start.py builds and runs it).
 *
 * Static, no threads, no allocation: open /dev/kvm, KVM_GET_SUPPORTED_CPUID, KVM_CREATE_VM, the TSS address,
 * the irqchip and PIT (as microvm and QEMU create them), guest RAM (anonymous mmap, one memory slot), one
 * vCPU with that CPUID, 32-bit protected mode at a `ud2` with an empty IDT (a triple fault), then KVM_RUN,
 * which must end in KVM_EXIT_SHUTDOWN. It prints CLOCK_MONOTONIC (ns) just before the first KVM_RUN on
 * stderr ("first KVM_RUN CLOCK_MONOTONIC N") and exits 2 as microvm does after a guest crash, leaving the
 * VM to be destroyed by the process exit. Usage: kvm-floor MEM_MIB [nopit]
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static struct {
	struct kvm_cpuid2 c;
	struct kvm_cpuid_entry2 e[256];
} cpuid = { .c = { .nent = 256 } };

int main(int argc, char **argv)
{
	uint64_t mem_size = (argc > 1 ? strtoull(argv[1], 0, 10) : 128) << 20;
	int pit = !(argc > 2 && !strcmp(argv[2], "nopit"));

	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("/dev/kvm");
	if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cpuid) < 0)
		die("KVM_GET_SUPPORTED_CPUID");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die("KVM_CREATE_VM");
	if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0)
		die("KVM_SET_TSS_ADDR");
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
		die("KVM_CREATE_IRQCHIP");
	struct kvm_pit_config pc = { .flags = KVM_PIT_SPEAKER_DUMMY };
	if (pit && ioctl(vm, KVM_CREATE_PIT2, &pc) < 0)
		die("KVM_CREATE_PIT2");
	uint8_t *mem = mmap(0, mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			    -1, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = mem_size, .userspace_addr = (uint64_t)mem
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		die("KVM_SET_USER_MEMORY_REGION");
	mem[0x1000] = 0x0f; /* ud2 */
	mem[0x1001] = 0x0b;

	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		die("KVM_CREATE_VCPU");
	if (ioctl(vcpu, KVM_SET_CPUID2, &cpuid) < 0)
		die("KVM_SET_CPUID2");
	int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = mmap(0, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");

	struct kvm_sregs s;
	if (ioctl(vcpu, KVM_GET_SREGS, &s) < 0)
		die("KVM_GET_SREGS");
	struct kvm_segment flat = { .base = 0, .limit = 0xffffffff, .present = 1, .s = 1, .db = 1, .g = 1 };
	s.cs = flat;
	s.cs.type = 0xb;
	s.cs.selector = 0x8;
	flat.type = 0x3;
	flat.selector = 0x10;
	s.ds = s.es = s.fs = s.gs = s.ss = flat;
	s.cr0 |= 1; /* protected mode, paging off */
	s.idt.base = 0;
	s.idt.limit = 0; /* every exception escalates to a triple fault */
	if (ioctl(vcpu, KVM_SET_SREGS, &s) < 0)
		die("KVM_SET_SREGS");
	struct kvm_regs r = { .rip = 0x1000, .rflags = 2 };
	if (ioctl(vcpu, KVM_SET_REGS, &r) < 0)
		die("KVM_SET_REGS");

	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	fprintf(stderr, "first KVM_RUN CLOCK_MONOTONIC %llu\n",
		(unsigned long long)t.tv_sec * 1000000000ULL + t.tv_nsec);
	if (ioctl(vcpu, KVM_RUN, 0) < 0)
		die("KVM_RUN");
	if (run->exit_reason != KVM_EXIT_SHUTDOWN) {
		fprintf(stderr, "kvm-floor: exit reason %u, not KVM_EXIT_SHUTDOWN\n", run->exit_reason);
		return 1;
	}
	return 2;
}
