"""Debian artifacts for Bazel builds: the guest kernel, OVMF, systemd-boot and
e2fsprogs, as pinned in debian.lock, which `make fetch` (fetch.sh) reads too:
one list of versions and sha256 for both. `make pin` rewrites it.

The module extension `debian` makes these repositories (MODULE.bazel imports
them with use_repo):

| repository          | packages                      | targets                                        |
|---------------------|-------------------------------|------------------------------------------------|
| debian_kernel       | linux-image-ABI               | :vmlinuz (boot/vmlinuz), :modules, :kernel, :abi |
| debian_ovmf         | ovmf                          | :code, :vars, :code_secboot, :vars_ms, :firmware |
| debian_systemd_boot | systemd-boot-efi              | :loader (systemd-bootx64.efi), :stub           |
| debian_e2fsprogs    | e2fsprogs and its libraries   | :mke2fs, :libs, :e2fsprogs                      |
| debian_cache        | all of the above              | :cache: third_party/fetch.sh's cache layout     |

debian_cache has exactly the layout of third_party/cache (root/ with every
package unpacked over one tree, versions.txt, kernel), so that
`testos/build --cache` reads the same thing under Bazel as under make. Bazel's
repository cache keeps each .deb once, by sha256, however many repositories
unpack it.

Each .deb is an ar archive; Bazel extracts it (type "deb") and then its
data.tar.*. Nothing runs on the host but Bazel itself.

An archive's absolute symbolic links (libc6's lib64/ld-linux-x86-64.so.2 ->
/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2) are rewritten by Bazel to point
into the directory they are extracted to, so they stay inside the repository
and are kept.
"""

_LOCK = Label("//third_party:debian.lock")

def _parse_lock(text):
    """debian.lock's lines as structs: name, version, sha256, sha1, archive, filename."""
    pkgs = []
    for n, line in enumerate(text.splitlines()):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        f = line.split()
        if len(f) != 6:
            fail("debian: third_party/debian.lock line {}: want 6 fields (name version sha256 sha1 archive filename), got {}: run make pin".format(n + 1, len(f)))
        pkgs.append(struct(name = f[0], version = f[1], sha256 = f[2], sha1 = f[3], archive = f[4], filename = f[5]))
    return pkgs

def _urls(pkg):
    """Mirrors for one package, most durable first.

    snapshot.debian.org keeps every file ever published, by its sha1;
    deb.debian.org has it only while it is current.
    """
    return [
        "https://snapshot.debian.org/file/" + pkg.sha1,
        "https://deb.debian.org/{}/{}".format(pkg.archive, pkg.filename),
    ]

def _deb(pkg):
    return json.encode({
        "name": pkg.name,
        "sha256": pkg.sha256,
        "urls": _urls(pkg),
        "version": pkg.version,
    })

def _unpack(rctx, deb, dest):
    """Downloads one .deb and extracts its data.tar.* into dest."""
    tmp = "_deb/" + deb["name"]
    rctx.download_and_extract(
        url = deb["urls"],
        sha256 = deb["sha256"],
        type = "deb",
        output = tmp,
    )
    data = [f for f in rctx.path(tmp).readdir() if f.basename.startswith("data.tar")]
    if len(data) != 1:
        fail("debian: {} {}: want one data.tar.* in the .deb, found {}".format(deb["name"], deb["version"], [f.basename for f in data]))
    rctx.extract(data[0], output = dest)
    rctx.delete(tmp)

def _debian_tree_impl(rctx):
    debs = [json.decode(d) for d in rctx.attr.debs]
    dest = "root" if rctx.attr.cache_layout else ""
    prefix = dest + "/" if dest else ""
    for deb in debs:
        _unpack(rctx, deb, dest)
    rctx.delete("_deb")
    if rctx.attr.kernel_abi:
        abi = rctx.attr.kernel_abi
        vmlinuz = rctx.path(prefix + "boot/vmlinuz-" + abi)
        if not vmlinuz.exists:
            fail("debian: the kernel package has no boot/vmlinuz-{}: is its line in third_party/debian.lock right?".format(abi))
        if not rctx.attr.cache_layout:
            # A name without the ABI, so that runfile paths stay put when the
            # kernel moves (resolve.Kernel: "debian_kernel/boot/vmlinuz").
            rctx.symlink(vmlinuz, "boot/vmlinuz")
        rctx.file("kernel" if rctx.attr.cache_layout else "abi", abi + "\n", executable = False)
    if rctx.attr.cache_layout:
        rctx.file("versions.txt", "".join(["{} {}\n".format(d["name"], d["version"]) for d in debs]), executable = False)
    rctx.file("BUILD.bazel", rctx.attr.build_file_content, executable = False)

debian_tree = repository_rule(
    implementation = _debian_tree_impl,
    doc = "Unpacks Debian packages, pinned by sha256, into one tree.",
    attrs = {
        "build_file_content": attr.string(
            doc = "The repository's BUILD.bazel.",
            mandatory = True,
        ),
        "cache_layout": attr.bool(
            doc = "Lay the tree out like third_party/cache: root/, versions.txt, kernel.",
        ),
        "debs": attr.string_list(
            doc = "The packages, each a JSON object: name, version, sha256, urls.",
            mandatory = True,
        ),
        "kernel_abi": attr.string(
            doc = "The kernel's ABI when a kernel package is among debs: checked, and written to abi (or kernel).",
        ),
    },
)

_KERNEL_BUILD = """\
package(default_visibility = ["//visibility:public"])

exports_files(["abi"])

# The kernel, also under its versioned name boot/vmlinuz-ABI.
filegroup(
    name = "vmlinuz",
    srcs = ["boot/vmlinuz"],
)

# lib/modules/ABI: the modules (uncompressed .ko) and modules.builtin*; there
# is no modules.dep (dependencies are in each module's .modinfo). With abi,
# which names the directory: package resolve finds lib/modules/ABI through
# abi and ABI/modules.builtin (a runfiles manifest lists files only).
filegroup(
    name = "modules",
    srcs = ["abi"] + glob(["lib/modules/**"]),
)

filegroup(
    name = "kernel",
    srcs = [
        ":modules",
        ":vmlinuz",
    ],
)
"""

_OVMF_BUILD = """\
package(default_visibility = ["//visibility:public"])

# Without secure boot: what qcluster boots by default (no SMM needed).
filegroup(
    name = "code",
    srcs = ["usr/share/OVMF/OVMF_CODE_4M.fd"],
)

filegroup(
    name = "vars",
    srcs = ["usr/share/OVMF/OVMF_VARS_4M.fd"],
)

# Secure boot with Microsoft's keys enrolled: an unsigned UKI is refused
# (the e2e suite checks that the launcher notices).
filegroup(
    name = "code_secboot",
    srcs = ["usr/share/OVMF/OVMF_CODE_4M.secboot.fd"],
)

filegroup(
    name = "vars_ms",
    srcs = ["usr/share/OVMF/OVMF_VARS_4M.ms.fd"],
)

filegroup(
    name = "firmware",
    srcs = glob(["usr/share/OVMF/*.fd"]),
)
"""

_SYSTEMD_BOOT_BUILD = """\
package(default_visibility = ["//visibility:public"])

# The A/B loader, put on every ESP as EFI/BOOT/BOOTX64.EFI.
filegroup(
    name = "loader",
    srcs = ["usr/lib/systemd/boot/efi/systemd-bootx64.efi"],
)

# The stub a unified kernel image is built on.
filegroup(
    name = "stub",
    srcs = ["usr/lib/systemd/boot/efi/linuxx64.efi.stub"],
)
"""

_E2FSPROGS_BUILD = """\
package(default_visibility = ["//visibility:public"])

filegroup(
    name = "mke2fs",
    srcs = ["sbin/mke2fs"],
)

# Shared libraries of e2fsprogs, including libc6's loader under both its
# names: lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 and the link
# lib64/ld-linux-x86-64.so.2, which Bazel made point at the former in this
# repository (the .deb's link is absolute).
filegroup(
    name = "libs",
    srcs = glob([
        "lib/x86_64-linux-gnu/*.so*",
        "lib64/*.so*",
        "usr/lib/x86_64-linux-gnu/*.so*",
    ]),
)

filegroup(
    name = "e2fsprogs",
    srcs = glob(["etc/mke2fs.conf"]) + [
        ":libs",
        ":mke2fs",
    ],
)
"""

_CACHE_BUILD = """\
package(default_visibility = ["//visibility:public"])

exports_files([
    "kernel",
    "versions.txt",
])

# third_party/fetch.sh's cache: pass the directory of versions.txt as
# `testos/build --cache`. Documentation is left out. root/lib64 is kept:
# testos/build puts lib64/ld-linux-x86-64.so.2 into the image (see
# debian_e2fsprogs for why the link stays inside the repository).
filegroup(
    name = "cache",
    srcs = [
        "kernel",
        "versions.txt",
    ] + glob(
        ["root/**"],
        exclude = [
            "root/usr/share/doc/**",
            "root/usr/share/man/**",
            "root/usr/share/lintian/**",
        ],
    ),
)
"""

def _pick(by_name, names):
    missing = [n for n in names if n not in by_name]
    if missing:
        fail("debian: third_party/debian.lock pins no {}".format(missing))
    return [by_name[n] for n in names]

def _debian_impl(mctx):
    pkgs = _parse_lock(mctx.read(_LOCK))
    kernels = [p.name for p in pkgs if p.name.startswith("linux-image-")]
    if len(kernels) != 1:
        fail("debian: third_party/debian.lock must pin one linux-image-ABI package, found {}".format(kernels))
    by_name = {p.name: _deb(p) for p in pkgs}
    kernel_abi = kernels[0].removeprefix("linux-image-")
    debian_tree(
        name = "debian_kernel",
        debs = _pick(by_name, kernels),
        kernel_abi = kernel_abi,
        build_file_content = _KERNEL_BUILD,
    )
    debian_tree(
        name = "debian_ovmf",
        debs = _pick(by_name, ["ovmf"]),
        build_file_content = _OVMF_BUILD,
    )
    debian_tree(
        name = "debian_systemd_boot",
        debs = _pick(by_name, ["systemd-boot-efi"]),
        build_file_content = _SYSTEMD_BOOT_BUILD,
    )
    debian_tree(
        name = "debian_e2fsprogs",
        debs = _pick(by_name, ["e2fsprogs", "libext2fs2", "libcom-err2", "libblkid1", "libuuid1", "libc6"]),
        build_file_content = _E2FSPROGS_BUILD,
    )
    debian_tree(
        name = "debian_cache",
        debs = [_deb(p) for p in pkgs],
        kernel_abi = kernel_abi,
        cache_layout = True,
        build_file_content = _CACHE_BUILD,
    )

    # Everything is pinned by sha256: the result needs no lockfile entry.
    return mctx.extension_metadata(
        root_module_direct_deps = "all",
        root_module_direct_dev_deps = [],
        reproducible = True,
    )

debian = module_extension(
    implementation = _debian_impl,
    doc = "The Debian repositories listed in this file's documentation.",
)
