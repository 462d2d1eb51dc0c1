"""Command-line and -o option parsing for `s3mount BUCKET[:/PREFIX] MOUNTPOINT`.

Every long option also works as `-o name=value` (dashes or underscores), so fstab lines can say
everything. Options mount(8) passes that mean nothing to a FUSE file system are accepted and
ignored; anything else unknown is an error that names it.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field

USAGE = "s3mount [options] BUCKET[:/PREFIX] MOUNTPOINT\n       s3mount stats MOUNTPOINT"

EXAMPLES = """\
examples:
  s3mount my-bucket /mnt/data
  s3mount --config /etc/s3mount/data.yaml my-bucket:/logs/2024 /mnt/logs -o ro,allow_other
  s3mount --endpoint http://127.0.0.1:9000 --cache-dir /var/cache/s3mount bucket ./mnt -f
  s3mount bucket /mnt/b -o uid=1000,gid=1000,umask=022,metadata_ttl=10
  mount -t fuse.s3mount bucket /mnt/data -o config=/etc/s3mount/data.yaml,allow_other
  fstab:  bucket:/prefix /mnt/data fuse.s3mount _netdev,config=/etc/s3mount/data.yaml 0 0
  s3mount stats /mnt/data
"""

# mount(8)/fstab words with no meaning for us (the kernel or mount handles them).
IGNORED = {"_netdev", "auto", "noauto", "user", "users", "nouser", "nofail", "defaults", "rw",
           "exec", "noexec", "suid", "nosuid", "dev", "nodev", "atime", "noatime", "relatime",
           "nodiratime", "async", "sync", "owner", "group", "comment", "loop", "x-gvfs-show"}


class OptionError(ValueError):
    pass


def parse_bytes(text: str, what: str) -> int:
    """'10G', '500M', '1.5G', '4096' -> bytes."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in units and t[-1:] else ""
    try:
        value = float(t[: len(t) - len(unit)] if unit else t) * units[unit]
    except ValueError:
        raise OptionError(f"{what} {text!r}: use a number with K, M, G or T") from None
    if not math.isfinite(value):
        raise OptionError(f"{what} {text!r}: use a number with K, M, G or T")
    return int(value)


def parse_size(text: str) -> int:
    """A cache size: at least 64M."""
    value = parse_bytes(text, "cache size")
    if value < 64 << 20:
        raise OptionError(f"cache size {text!r} is below the 64M minimum")
    return value


def _octal(value: str, name: str) -> int:
    try:
        return int(value, 8)
    except ValueError:
        raise OptionError(f"{name}={value!r} is not an octal mode") from None


# A read reply is spliced from the cache file through libfuse's pipe, which must hold the reply,
# its header and three pages more. Pipes grow to 1 MiB (fs.pipe-max-size) without
# CAP_SYS_RESOURCE, which root in a container often lacks; with 1 MiB reads libfuse would fall
# back to copying each reply through a fresh buffer.
MAX_READ = (1 << 20) - 16 * 1024
# The kernel's readahead for the mount (its bdi), i.e. how much a sequential reader keeps in
# flight: 1 MiB is the most FUSE INIT can ask for. 4 MiB measured +20% cold and 1.5-2x warm
# sequential reads on the bench VM (bench/README.md); more also widens mmap read-around.
DEFAULT_READ_AHEAD = 4 << 20
READ_AHEAD_RANGE = (128 << 10, 256 << 20)


@dataclass
class MountOptions:
    bucket: str | None = None
    prefix: str = ""
    mountpoint: str = ""
    config: str | None = None
    endpoint: str | None = None
    region: str | None = None
    profile: str | None = None
    cache_dir: str | None = None
    cache_size: int | None = None
    foreground: bool = False
    read_only: bool = False
    allow_other: bool = False
    allow_root: bool = False
    uid: int | None = None
    gid: int | None = None
    file_mode: int = 0o644
    dir_mode: int = 0o755
    metadata_ttl: float = 5.0
    posix_meta: str = "changed"  # "all": write mode/uid/gid/mtime on every object, as s3fs does
    log_level: str = "info"
    logfile: str | None = None
    libfuse: int = 3
    read_ahead: int = DEFAULT_READ_AHEAD
    allow_insecure_config: bool = False
    no_verify_tls: bool = False
    nonempty: bool = False
    version: bool = False
    extra_fuse: dict = field(default_factory=dict)

    def fuse_kwargs(self, bucket: str) -> dict:
        kw = {"fsname": f"s3mount:{bucket}", "subtype": "s3mount", "default_permissions": True,
              "attr_timeout": self.metadata_ttl, "entry_timeout": self.metadata_ttl,
              "negative_timeout": min(self.metadata_ttl, 1.0), "max_read": MAX_READ,
              # unlink of an open file reaches us (no .fuse_hidden rename that would land in S3)
              "hard_remove": True}
        if self.libfuse == 2:
            kw["big_writes"] = True
            kw["max_write"] = 128 << 10  # libfuse 3 takes it in init (fuse_ops)
        if self.read_only:
            kw["ro"] = True
        if self.allow_other:
            kw["allow_other"] = True
        if self.allow_root:
            kw["allow_root"] = True
        kw.update(self.extra_fuse)
        return kw


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="s3mount", usage=USAGE, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Mount an S3 bucket (or a prefix of it) as a directory. Object metadata "
                    "x-amz-meta-NAME is the extended attribute user.NAME. Subcommand: "
                    "`s3mount stats MOUNTPOINT` prints live counters of a running mount.")
    p.add_argument("source", nargs="?", help="BUCKET or BUCKET:/PREFIX (may come from the config's default_bucket)")
    p.add_argument("mountpoint", nargs="?", help="an existing directory")
    p.add_argument("--config", metavar="FILE", help="YAML file with an s3: section (see README), e.g. /etc/s3mount/data.yaml")
    p.add_argument("--endpoint", metavar="URL", help="S3 endpoint: host, host:port or URL, e.g. http://127.0.0.1:9000")
    p.add_argument("--region", help="signing region, e.g. eu-central-1")
    p.add_argument("--profile", help="AWS profile for credentials, e.g. prod")
    p.add_argument("--cache-dir", metavar="DIR", help="local data cache directory (default ~/.cache/s3mount/BUCKET-PID)")
    p.add_argument("--cache-size", metavar="SIZE", help="hard cap on cache disk use, e.g. 2G, 500M (default: 10G or half the free space, whichever is less)")
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground, log to stderr")
    p.add_argument("-o", dest="o", action="append", default=[], metavar="OPT[,OPT...]",
                   help="mount options: ro, allow_other, allow_root, nonempty, uid=N, gid=N, umask=022, "
                        "file_mode=0644, dir_mode=0755, posix_meta=changed|all, and every long option as name=value, "
                        "e.g. -o config=/etc/s3mount/a.yaml,allow_other")
    p.add_argument("--metadata-ttl", type=float, metavar="SECONDS", help="how long stat results and listings are cached (default 5)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    p.add_argument("--logfile", metavar="PATH", help="log to this file, reopened on SIGHUP (default: stderr with -f, else CACHE_DIR/s3mount.log)")
    p.add_argument("--read-ahead", metavar="SIZE", help="kernel readahead for sequential readers, 128K to 256M (default 4M; set as root only)")
    p.add_argument("--libfuse", type=int, choices=[2, 3], help="libfuse major version to use (default 3)")
    p.add_argument("--allow-insecure-config", action="store_true", help="accept a config file with secrets readable by others")
    p.add_argument("--no-verify-tls", action="store_true", help="do not check the server's TLS certificate (logged)")
    p.add_argument("-V", "--version", action="store_true", help="print the version")
    return p


def parse_args(argv: list[str]) -> MountOptions:
    """Defaults < the config file's mount: section < -o options < long options."""
    parser = build_parser()
    a = parser.parse_args(argv)
    opts = MountOptions(version=a.version)
    if a.version:
        return opts
    o_items = [x.strip() for group in a.o for x in group.split(",") if x.strip()]
    config = a.config or next((i.partition("=")[2] for i in o_items
                               if i.replace("-", "_").startswith("config=")), None)
    if config:
        for item in config_mount_items(config, opts):
            apply_o(opts, item)
    for item in o_items:
        apply_o(opts, item)
    if a.cache_size is not None:
        opts.cache_size = parse_size(a.cache_size)
    if a.read_ahead is not None:
        apply_o(opts, f"read_ahead={a.read_ahead}")
    for name in ("config", "endpoint", "region", "profile", "cache_dir", "metadata_ttl",
                 "log_level", "logfile", "libfuse", "allow_insecure_config", "no_verify_tls",
                 "foreground"):
        value = getattr(a, name)
        if value not in (None, False):
            setattr(opts, name, value)
    if not a.mountpoint and a.source and (opts.mountpoint or config):
        if opts.mountpoint:          # `s3mount --config F BUCKET`: mountpoint from the file
            a.mountpoint = None
        else:                        # `s3mount --config F MOUNTPOINT`
            a.mountpoint, a.source = a.source, None
    if a.mountpoint:
        opts.mountpoint = a.mountpoint
    if not opts.mountpoint:
        raise OptionError("missing MOUNTPOINT (usage: " + USAGE.splitlines()[0] + ")")
    if a.source:
        bucket, _, prefix = a.source.partition(":")
        opts.bucket = bucket or None
        opts.prefix = prefix.strip("/")
    # libfuse moves the daemon to / once mounted: a relative path would then name another place.
    opts.mountpoint = os.path.abspath(opts.mountpoint)
    for name in ("cache_dir", "logfile", "config"):
        if getattr(opts, name):
            setattr(opts, name, os.path.abspath(getattr(opts, name)))
    return opts


MOUNT_SECTION_KEYS = {"bucket", "prefix", "mountpoint", "options", "cache_dir", "cache_size", "nonempty",
                      "log_level", "logfile", "metadata_ttl", "read_only", "allow_other",
                      "allow_root", "uid", "gid", "umask", "file_mode", "dir_mode", "libfuse",
                      "posix_meta", "read_ahead"}


def config_mount_items(path: str, opts: MountOptions) -> list[str]:
    """The config file's optional mount: section (bucket, mountpoint, options...) as -o items;
    bucket, prefix and mountpoint go straight into `opts`."""
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return []  # reported with its reason when the s3: section is loaded
    if not isinstance(doc, dict):
        return []
    unknown = sorted(set(doc) - {"s3", "mount"})
    if unknown:
        raise OptionError(f"config file {path}: unknown section(s) {', '.join(map(str, unknown))}; "
                          "use s3: and mount:")
    section = doc.get("mount") or {}
    if not isinstance(section, dict):
        raise OptionError(f"config file {path}: mount: must be a mapping")
    bad = sorted(set(section) - MOUNT_SECTION_KEYS)
    if bad:
        raise OptionError(f"config file {path}: unknown mount key(s) {', '.join(map(str, bad))}; "
                          f"known: {', '.join(sorted(MOUNT_SECTION_KEYS))}")
    items: list[str] = []
    for key, value in section.items():
        if key == "bucket":
            opts.bucket = str(value)
        elif key == "prefix":
            opts.prefix = str(value).strip("/")
        elif key == "mountpoint":
            opts.mountpoint = str(value)
        elif key == "options":
            values = value if isinstance(value, list) else str(value).split(",")
            items += [str(v).strip() for v in values if str(v).strip()]
        elif isinstance(value, bool):
            if value:
                items.append("ro" if key == "read_only" else key)
        else:
            items.append(f"{key}={value}")
    return items


def apply_o(opts: MountOptions, item: str) -> None:
    name, eq, value = item.partition("=")
    name = name.strip().replace("-", "_")
    if name in IGNORED or name.startswith("x-") or name.startswith("x_"):
        return
    flags = {"ro": "read_only", "allow_other": "allow_other", "allow_root": "allow_root",
             "foreground": "foreground", "allow_insecure_config": "allow_insecure_config",
             "no_verify_tls": "no_verify_tls", "nonempty": "nonempty"}
    if name in flags and not eq:
        setattr(opts, flags[name], True)
        return
    if not eq:
        raise OptionError(f"unknown mount option {name!r}")
    if name in ("config", "endpoint", "region", "profile", "cache_dir", "logfile"):
        setattr(opts, name, value)
    elif name == "cache_size":
        opts.cache_size = parse_size(value)
    elif name == "read_ahead":
        size = parse_bytes(value, "read_ahead")
        low, high = READ_AHEAD_RANGE
        if not low <= size <= high:
            raise OptionError(f"read_ahead={value!r} must be between 128K and 256M")
        opts.read_ahead = size
    elif name in ("uid", "gid"):
        if not value.isdigit():
            raise OptionError(f"{name}={value!r} must be a number")
        setattr(opts, name, int(value))
    elif name == "umask":
        mask = _octal(value, name)
        opts.file_mode, opts.dir_mode = 0o666 & ~mask, 0o777 & ~mask
    elif name in ("file_mode", "dir_mode"):
        setattr(opts, name, _octal(value, name))
    elif name == "metadata_ttl":
        try:
            opts.metadata_ttl = float(value)
        except ValueError:
            raise OptionError(f"metadata_ttl={value!r} must be a number of seconds") from None
    elif name == "log_level":
        if value not in ("debug", "info", "warning", "error"):
            raise OptionError(f"log_level={value!r}: use debug, info, warning or error")
        opts.log_level = value
    elif name == "posix_meta":
        if value not in ("changed", "all"):
            raise OptionError(f"posix_meta={value!r}: use changed (only values that differ from "
                              "the mount's defaults, and explicit mtimes) or all (as s3fs)")
        opts.posix_meta = value
    elif name == "libfuse":
        if value not in ("2", "3"):
            raise OptionError("libfuse must be 2 or 3")
        opts.libfuse = int(value)
    else:
        raise OptionError(f"unknown mount option {name!r}")
