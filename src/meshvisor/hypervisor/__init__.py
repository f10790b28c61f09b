"""VMs through libvirt (QEMU/KVM). The driver lands with the VM issue; it will obey `meshvisor.core.compute`."""
