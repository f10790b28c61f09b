"""Instances: containers and VMs under one shape.

requests      create, change, act on, delete; exec and logs (answered at once)
steps         the operations' work on the compute drivers: create, start ... snapshots, delete
attachments   network interfaces (at start, hot attach/detach, VM DHCP) and volume hot-plug
"""
