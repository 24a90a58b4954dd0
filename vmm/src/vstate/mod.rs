//! Thin wrappers over KVM (kvm-ioctls) and guest memory (vm-memory): opening KVM, the VM with its memory and
//! in-kernel devices, and the vCPUs with their run loop.

pub mod hex;
pub mod kvm;
pub mod memory;
pub mod vcpu;
pub mod vcpu_state;
pub mod vm;
