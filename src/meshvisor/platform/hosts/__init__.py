"""Hosts.

registry   hosts register, are seen by their reconcile pass, go offline, are forgotten
limits     what this host can give one instance
placement  the hosts as the scheduler sees them, from the database; where a new instance goes
scheduler  which host a new instance goes to (pure): constraints, room with overcommit, spread, sampling
vm_paths   the start-up check that QEMU can reach the VM files (images, VMs, pools)
"""
