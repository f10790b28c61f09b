"""The built-in `tiny` VM guest: a stock Debian cloud kernel and a busybox initramfs that boot in seconds (TCG).

What it runs and how it is built:

    files/        the guest's own files, shipped as package data: `init` (PID 1 first: mounts, network, disks,
                  power button, web page), `inittab`, `rc.shutdown`, `acpi-power-button`, `udhcpc.script`,
                  `profile`, `passwd`, `group`
    rootfs.py     which of those files lands where in the guest, with which mode (read with importlib.resources)
    debs.py       the kernel and busybox-static packages: `apt-get download` into a cache, read with python-debian
    kernel.py     the kernel package: the modules the guest needs (`.modinfo` read with pyelftools), load order
    initramfs.py  the cpio "newc" + gzip archive (libarchive) and the guest's root file system laid out in it
    build.py      `build_tiny(out_dir)` -> `TinyImage` (kernel, initrd, default command line), cached by a stamp
    errors.py     `TinyImageError`

The guest is configured on the kernel command line (see `TinyImage.kernel_cmdline`):

    mv.hostname=NAME            host name (default "tiny"); also served at http://GUEST/ by busybox httpd
    mv.ip=ADDR/PREFIX           static IPv4 address for eth0; without it eth0 (if any) runs DHCP (udhcpc)
    mv.gw=GW                    default gateway for the static address

Every other NIC, including one hot-plugged while the guest runs, is brought up and runs DHCP (a watch polls
/sys/class/net every second); only eth0 takes the default route and the resolver from its lease. Each lease is
printed as `meshvisor-tiny: ethN ADDR/MASK (dhcp bound)`; a NIC that is unplugged as `meshvisor-tiny: ethN
removed`.

It prints `meshvisor-tiny: ...` lines on the serial console (ttyS0): `init reached (hostname NAME)` first,
`data disk mounted ...` when /dev/vda (formatted with mke2fs if blank) is on /data, then `ready`.

Every other virtio disk (and /dev/vda too when it has a serial: a disk with a serial is never the data disk) is a
volume: mounted, never formatted, read-only when the device is (/sys/block/vdX/ro), at /mnt/SERIAL
(/sys/block/vdX/serial), or /mnt/vdX without a serial: `meshvisor-tiny: disk vdX mounted at /mnt/NAME` (with
` (read-only)`), or `disk vdX has no file system to mount`. The disks the VM boots with are mounted before
`ready`; the watch mounts hot-plugged ones within a second and, when one is unplugged, unmounts it lazily and
prints `meshvisor-tiny: disk vdX removed`. httpd serves them too: http://GUEST/mnt/NAME/FILE, and
http://GUEST/cgi-bin/call?ADDR:PORT/PATH makes the guest itself GET http://ADDR:PORT/PATH (its mesh sidecar's
upstreams, for instance) and answers with the whole response. The ACPI power
button (`virsh shutdown`) and `poweroff` typed on the console both shut it down cleanly: busybox acpid runs
/etc/acpi/PWRF/00000080, which asks busybox init to power off; init runs /etc/rc.shutdown (sync, unmount /data),
kills every process and powers the machine off (the domain then needs `<features><acpi/></features>`).
"""

from meshvisor.guest.build import TinyImage, build_tiny
from meshvisor.guest.errors import TinyImageError

__all__ = ["TinyImage", "TinyImageError", "build_tiny"]
