"""Instances: containers and VMs under one shape.

shape         the fields of an instance, one Pydantic model family (the API's body, a stack file's instance)
requests      create (a check, then the writes), change, act on, delete (checked and written; no driver call)
live          host-local calls answered at once: exec, logs, terminal, usage, snapshot list
steps         the operations' work on the compute drivers: create, start ... snapshots, delete
attachments   network interfaces (at start, hot attach/detach, VM DHCP) and volume hot-plug
"""
