"""meshvisor: VMs and containers side by side under one API and one service mesh."""
