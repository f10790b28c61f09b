"""Storage pools and volumes.

pools      the pool layer: the default pool, pools made and deleted, quotas and free space (checked and written)
requests   volumes: which pool, attachments, snapshots, clones, a VM's root disk (checked and written)
steps      the operations' work through the pool's driver; loop mounts for containers, disks for VMs
"""
