"""Storage pools and volumes.

requests   the pool layer: which pool, quotas, attachments, snapshots, clones (checked and written)
steps      the operations' work through the pool's driver; loop mounts for containers, disks for VMs
"""
