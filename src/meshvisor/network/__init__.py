"""Overlay networks (pyroute2, nftables, dnsmasq). Lands with the networking issue."""
