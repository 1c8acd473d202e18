"""Where each cgroup controller lives on this machine, and where the node's own group is.

A controller is bound either to a cgroup v1 hierarchy (one mount per controller, or a few
mounted together such as ``cpu,cpuacct``) or to the cgroup v2 unified tree, never both. The
node's own group in each hierarchy is the one ``/proc/self/cgroup`` names, seen through the
mount (``/proc/self/mountinfo``), so a node inside a container or a systemd service finds the
subtree it was given, not the root of the hierarchy.

``detect()`` reads the live machine; ``build_layout()`` takes the same texts so tests can feed
it other machines.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

V1 = 1
V2 = 2

#: Mount options of a cgroup v1 mount that are not controller names.
_V1_OPTIONS = frozenset({"rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec",
                         "xattr", "clone_children", "noprefix", "cpuset_v2_mode",
                         "favordynmods", "nsdelegate"})
_OCTAL = re.compile(r"\\([0-7]{3})")


@attrs.frozen
class Mount:
    """A cgroup filesystem mount: its version, where it is, which part of the tree it shows."""

    version: int
    mountpoint: Path
    #: The directory of the hierarchy shown at ``mountpoint`` (``/`` unless bind-mounted).
    root: str
    #: Controllers bound to it (v1 only; v2 lists its own in ``cgroup.controllers``).
    controllers: frozenset[str]


@attrs.frozen
class Hierarchy:
    """One cgroup hierarchy as the node uses it: version, mount, controllers, its own group."""

    version: int
    mountpoint: Path
    #: v1: the controllers bound to this hierarchy; v2: those the node's group may use.
    controllers: frozenset[str]
    #: The node's own group in this hierarchy (``/proc/self/cgroup``), as a directory.
    own: Path
    #: v2 only: controllers enabled at the root of the tree (to tell "not delegated" apart).
    mounted: frozenset[str] = frozenset()

    def describe(self) -> str:
        """``cgroup v1 (/sys/fs/cgroup/memory)``, for messages."""
        return f"cgroup v{self.version} ({self.mountpoint})"


@attrs.frozen
class Layout:
    """Every cgroup hierarchy of the machine the node runs on."""

    hierarchies: tuple[Hierarchy, ...]
    #: Controllers the kernel knows (``/proc/cgroups``): name → (v1 hierarchy id, enabled).
    kernel: dict[str, tuple[int, bool]] = attrs.field(factory=dict)

    def hierarchy_of(self, controller: str) -> Hierarchy | None:
        """The hierarchy holding ``controller`` for the node's group, or None."""
        for hierarchy in self.hierarchies:
            if hierarchy.version == V1 and controller in hierarchy.controllers:
                return hierarchy
        for hierarchy in self.hierarchies:
            if hierarchy.version == V2 and controller in hierarchy.controllers:
                return hierarchy
        return None

    @property
    def unified(self) -> Hierarchy | None:
        """The cgroup v2 tree, if it is mounted."""
        return next((h for h in self.hierarchies if h.version == V2), None)

    def missing_reason(self, controller: str) -> str:
        """Why ``controller`` cannot be used here, and how to make it usable."""
        known = self.kernel.get(controller)
        if self.kernel and known is None:
            return (f"this kernel has no {controller} controller (it is not in /proc/cgroups); "
                    f"use a kernel built with it")
        if known is not None and not known[1]:
            return (f"the {controller} controller is disabled on the kernel command line; "
                    f"remove cgroup_disable={controller} and reboot")
        unified = self.unified
        if unified is not None and controller in unified.mounted:
            return (f"the {controller} controller is not delegated to the node's cgroup "
                    f"{unified.own} on cgroup v2; enable it in every ancestor's "
                    f"cgroup.subtree_control (echo +{controller} > "
                    f"{unified.own.parent}/cgroup.subtree_control), or run the node as a "
                    f"systemd service with Delegate=yes")
        if known is not None and known[0] != 0:
            return (f"the {controller} controller is bound to cgroup v1 hierarchy {known[0]}, "
                    f"which is not mounted here; mount it: mkdir -p /sys/fs/cgroup/{controller}"
                    f" && mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller}")
        where = unified.mountpoint if unified is not None else "/sys/fs/cgroup"
        return (f"no cgroup hierarchy offers the {controller} controller; on cgroup v2 enable "
                f"it with echo +{controller} > {where}/cgroup.subtree_control, or mount a v1 "
                f"hierarchy: mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller}")


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str, kernel: dict[str, tuple[int, bool]] | None = None) -> list[Mount]:
    """The cgroup mounts listed in a ``/proc/<pid>/mountinfo`` text."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        root, mountpoint = _unescape(fields[3]), Path(_unescape(fields[4]))
        if tail[0] == "cgroup2":
            mounts.append(Mount(V2, mountpoint, root, frozenset()))
            continue
        options = tail[2].split(",")
        if kernel:
            controllers = frozenset(o for o in options if o in kernel)
        else:
            controllers = frozenset(o for o in options if "=" not in o and o not in _V1_OPTIONS)
        if controllers:  # a named hierarchy (name=systemd) has no controller to offer
            mounts.append(Mount(V1, mountpoint, root, controllers))
    return mounts


def parse_proc_cgroup(text: str) -> list[tuple[int, frozenset[str], str]]:
    """The lines of ``/proc/<pid>/cgroup``: ``(hierarchy id, controllers, group path)``."""
    entries: list[tuple[int, frozenset[str], str]] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        controllers = frozenset(c for c in parts[1].split(",") if c and not c.startswith("name="))
        if parts[1] and not controllers:
            continue  # named hierarchy
        entries.append((int(parts[0]), controllers, parts[2]))
    return entries


def parse_proc_cgroups(text: str) -> dict[str, tuple[int, bool]]:
    """``/proc/cgroups``: controller name → (v1 hierarchy id, enabled)."""
    kernel: dict[str, tuple[int, bool]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and not line.startswith("#") and fields[1].isdigit():
            kernel[fields[0]] = (int(fields[1]), fields[3] == "1")
    return kernel


def _group_dir(mount: Mount, path: str) -> Path:
    """The directory of group ``path`` (as /proc/self/cgroup names it) under ``mount``."""
    root = mount.root.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    return mount.mountpoint / path.lstrip("/")


def _pick_mount(candidates: list[Mount], path: str) -> Mount | None:
    def fits(mount: Mount) -> bool:
        root = mount.root.rstrip("/")
        return not root or path == root or path.startswith(root + "/")

    return next((m for m in candidates if m.root == "/"), None) or next(
        (m for m in candidates if fits(m)), None) or (candidates[0] if candidates else None)


def _read_words(path: Path) -> frozenset[str]:
    try:
        return frozenset(path.read_text().split())
    except OSError:
        return frozenset()


def build_layout(mountinfo: str, proc_cgroup: str, proc_cgroups: str = "") -> Layout:
    """The layout described by the texts of ``mountinfo``, ``/proc/self/cgroup`` and
    ``/proc/cgroups`` (v2 controllers are read from the tree itself)."""
    kernel = parse_proc_cgroups(proc_cgroups)
    mounts = parse_mountinfo(mountinfo, kernel)
    hierarchies: list[Hierarchy] = []
    for _hid, controllers, path in parse_proc_cgroup(proc_cgroup):
        if controllers:
            mount = _pick_mount([m for m in mounts if m.version == V1
                                 and m.controllers == controllers], path)
            if mount is not None:
                hierarchies.append(Hierarchy(V1, mount.mountpoint, mount.controllers,
                                             _group_dir(mount, path)))
            continue
        mount = _pick_mount([m for m in mounts if m.version == V2], path)
        if mount is None:
            continue
        own = _group_dir(mount, path)
        hierarchies.append(Hierarchy(V2, mount.mountpoint, _read_words(own / "cgroup.controllers"),
                                     own, _read_words(mount.mountpoint / "cgroup.controllers")))
    return Layout(tuple(hierarchies), kernel)


def detect(proc: Path = Path("/proc")) -> Layout:
    """The layout of the machine this process runs on (empty where /proc cannot be read)."""
    def read(name: str) -> str:
        try:
            return (proc / name).read_text()
        except OSError:
            return ""

    return build_layout(read("self/mountinfo"), read("self/cgroup"), read("cgroups"))
