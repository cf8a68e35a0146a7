"""qcluster's own Bazel rules: the OS image, and the shape of an e2e test.

- os_image runs testos/build, the program behind `make image`, as a build
  action, and gives its two outputs Bazel names: the OCI layout as a
  directory (a tree artifact) and the loader as a file.
- e2e_test is a go_test with what an end-to-end suite needs: the image, the
  loader and OVMF as data, a large size, an eternal timeout, and tags that
  keep it out of `bazel test //...` and out of the cache. e2e
  packages get it from gazelle with
  `# gazelle:map_kind go_test e2e_test //third_party:defs.bzl` in their
  BUILD.bazel.
"""

load("@io_bazel_rules_go//go:def.bzl", "go_test")

_BUILD_IMAGE = """\
set -eu
tool=$1 cache=$2 agent=$3 init=$4 image=$5 loader=$6
work=$(mktemp -d "${TMPDIR:-/tmp}/os_image.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$tool" --out "$work" --cache "$cache" --agent "$agent" --init "$init"
cp -R "$work/testos/." "$image/"
cp "$work/loader.efi" "$loader"
"""

def _os_image_impl(ctx):
    image = ctx.actions.declare_directory(ctx.label.name)
    loader = ctx.outputs.loader

    # The cache's top directory is the one holding versions.txt.
    versions = [f for f in ctx.files.cache if f.owner.package == "" and f.basename == "versions.txt"]
    if len(versions) != 1:
        fail("os_image: cache {} has no versions.txt at its top: is it @debian_cache//:cache?".format(ctx.attr.cache.label))
    args = ctx.actions.args()
    args.add(ctx.executable.tool)
    args.add(versions[0].dirname)
    args.add(ctx.executable.agent)
    args.add(ctx.executable.init)
    args.add(image.path)
    args.add(loader.path)
    ctx.actions.run_shell(
        command = _BUILD_IMAGE,
        arguments = [args],
        inputs = depset([ctx.executable.agent, ctx.executable.init], transitive = [ctx.attr.cache[DefaultInfo].files]),
        tools = [ctx.attr.tool[DefaultInfo].files_to_run],
        outputs = [image, loader],
        mnemonic = "OsImage",
        progress_message = "Building OS image %{label}",
    )
    return [DefaultInfo(
        files = depset([image, loader]),
        runfiles = ctx.runfiles(files = [image, loader]),
    )]

os_image = rule(
    implementation = _os_image_impl,
    doc = """The OS image as `make image` builds it.

Outputs: NAME, the OCI layout (a directory: oci-layout, index.json,
blobs/sha256/...), and `loader`, the A/B loader. Their runfile paths are
REPO/PACKAGE/NAME and REPO/PACKAGE/LOADER, e.g. qcluster/testos/image and
qcluster/testos/loader.efi, which is where package resolve looks first.

The tool is run as `TOOL --out DIR --cache CACHE --agent AGENT --init INIT` and must write
DIR/testos and DIR/loader.efi. In the sandbox every input is a symbolic link
into Bazel's trees: the tool must read through links, never copy them as
links.
""",
    attrs = {
        "agent": attr.label(
            doc = "The guest's PID 1, a go_binary built for linux/amd64 without cgo.",
            executable = True,
            cfg = "target",
            mandatory = True,
        ),
        "init": attr.label(
            doc = "The guest's stage 1 (/init of the initramfs), a go_binary for linux/amd64 without cgo.",
            executable = True,
            cfg = "target",
            mandatory = True,
        ),
        "cache": attr.label(
            doc = "Debian artifacts in third_party/fetch.sh's cache layout (@debian_cache//:cache).",
            allow_files = True,
            mandatory = True,
        ),
        "loader": attr.output(
            doc = "The loader's file name, e.g. loader.efi.",
            mandatory = True,
        ),
        "tool": attr.label(
            doc = "The image builder (//testos/build).",
            executable = True,
            cfg = "exec",
            mandatory = True,
        ),
    },
)

# What every e2e suite boots: the default image, its loader, OVMF (plain, and
# secure boot with Microsoft's keys for the negative test), and the stub a
# test UKI is built on. Runfile paths (apparent repository names, which
# runfiles.Rlocation maps through the runfiles' _repo_mapping):
# qcluster/testos/image, qcluster/testos/loader.efi,
# debian_ovmf/usr/share/OVMF/OVMF_{CODE,VARS}_4M.fd,
# debian_ovmf/usr/share/OVMF/OVMF_CODE_4M.secboot.fd,
# debian_ovmf/usr/share/OVMF/OVMF_VARS_4M.ms.fd,
# debian_systemd_boot/usr/lib/systemd/boot/efi/linuxx64.efi.stub.
# Label() resolves them here, in qcluster, so that a module that depends on
# qcluster gets the same files from its own e2e_test targets.
E2E_DATA = [
    Label("//testos:image"),
    Label("//testos:loader.efi"),
    Label("@debian_ovmf//:code"),
    Label("@debian_ovmf//:code_secboot"),
    Label("@debian_ovmf//:vars"),
    Label("@debian_ovmf//:vars_ms"),
    Label("@debian_systemd_boot//:stub"),
]

# qemu/ looks for OVMF through these variables (package resolve) when the
# runfiles do not have it under its apparent name. rlocationpath, not
# rootpath: rules_go's go_test runs in its package's directory, where a path
# relative to the runfiles root leads nowhere; package resolve hands a
# relative value to runfiles.Rlocation first.
E2E_ENV = {
    "QCLUSTER_OVMF_CODE": "$(rlocationpath {})".format(Label("@debian_ovmf//:code")),
    "QCLUSTER_OVMF_VARS": "$(rlocationpath {})".format(Label("@debian_ovmf//:vars")),
}

def e2e_test(
        name,
        data = [],
        env = {},
        env_inherit = [],
        tags = [],
        cpus = 2,
        exclusive = False,
        kvm = False,
        size = "large",
        timeout = "eternal",
        **kwargs):
    """A go_test that boots real clusters.

    It is tagged "manual", so `bazel test //...` boots no VM: name it
    (`bazel test //e2e:e2e_test`). It is tagged "external": its result
    depends on the host's QEMU and swtpm, which Bazel does not see, so it is
    never taken from the cache.

    Args:
      name: the test's name.
      data: more runfiles, added to E2E_DATA.
      env: more environment, added to E2E_ENV.
      env_inherit: more variables taken from `bazel test`'s environment;
        CI always is (internal/needs fails instead of skipping when CI=true).
      tags: more tags. Always added: "manual", "external", "cpu:N" (see
        cpus) and "no-remote-exec" (QEMU and swtpm come from the host).
      cpus: CPUs Bazel reserves for the test while it runs, the tag "cpu:N";
        default 2, what a three-node cluster under TCG keeps busy.
      exclusive: run with no other test at the same time (tag "exclusive"),
        for suites that look at the whole machine: leftover processes,
        listening sockets, several clusters at once.
      kvm: the suite needs /dev/kvm (tag "requires-kvm"; select with
        --test_tag_filters). qcluster's own suites run under TCG: False.
      size: default "large".
      timeout: default "eternal" (3600 s), which rules_go also passes as
        -test.timeout. `make test` gives go test 28 minutes; Bazel's classes
        are 60, 300, 900 and 3600 s, and 900 s is too short for the suites
        under TCG. For make's bound exactly: --test_timeout=1680.
      **kwargs: everything else go_test takes (srcs, deps, embed, ...).
    """
    go_test(
        name = name,
        data = E2E_DATA + data,
        env = dict(E2E_ENV, **env),
        env_inherit = ["CI"] + env_inherit,
        size = size,
        timeout = timeout,
        tags = tags + ["manual", "external", "cpu:%d" % cpus, "no-remote-exec"] +
               (["exclusive"] if exclusive else []) +
               (["requires-kvm"] if kvm else []),
        **kwargs
    )
