"""Networks and security groups.

requests          networks, IPAM (addresses, MACs, interface order)
steps             each host's bridge + VXLAN per network, DHCP for VMs, clean-up of stray links
security_groups   security group requests and membership
security_steps    each host's nftables filter, rebuilt from the database
"""
