"""How the guest is driven: QEMU, the initramfs, triage, the zstest protocol, its clients
(zram, zswap) and the scripts that run in the guest."""
