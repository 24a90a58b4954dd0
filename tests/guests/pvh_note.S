/* The PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): linking this object in makes the guest a PVH kernel. */
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4            /* name size: "Xen\0" */
    .long 4            /* descriptor size */
    .long 18           /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_start32
