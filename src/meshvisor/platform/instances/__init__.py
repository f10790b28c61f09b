"""Instances: containers and VMs under one shape.

requests      create, change, act on, delete (checked and written; no driver call)
live          host-local calls answered at once: exec, logs, terminal, usage, snapshot list
steps         the operations' work on the compute drivers: create, start ... snapshots, delete
attachments   network interfaces (at start, hot attach/detach, VM DHCP) and volume hot-plug
"""
