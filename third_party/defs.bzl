"""qcluster's own Bazel rules: the OS image, and the shape of an e2e test.

- os_image runs testos/build, the program behind `make image`, as a build
  action, and gives its two outputs Bazel names: the OCI layout as a
  directory (a tree artifact) and the loader as a file.
- cluster_template boots a cluster cold with the launcher and snapshots it,
  as a build action: the template that e2e suites restore instead of
  booting (package resolve finds it through QCLUSTER_TEMPLATE).
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

_MAKE_TEMPLATE = """\
set -eu
launcher=$1 out=$2
shift 2
# The launcher makes the snapshot directory itself, and refuses one that
# exists: give it the path of the output, not the directory Bazel made.
rmdir "$out"
"$launcher" --cold --exit-when-ready --log-level error --snapshot "$out" "$@"
"""

def _template_resources(_os, _inputs):
    # What local scheduling reserves: a cluster under TCG keeps two cores
    # busy; memory (MB) for three 512 MiB guests and their helpers.
    return {"cpu": 2, "memory": 2048}

def _cluster_template_impl(ctx):
    out = ctx.actions.declare_directory(ctx.label.name)
    image = [f for f in ctx.files.image if f.is_directory]
    if len(image) != 1:
        fail("cluster_template: image {} gives no OCI layout directory".format(ctx.attr.image.label))
    args = ctx.actions.args()
    args.add(ctx.executable.launcher)
    args.add(out.path)
    args.add("--nodes", str(ctx.attr.nodes))
    args.add("--tpm=%s" % ("true" if ctx.attr.tpm else "false"))
    args.add("--accel", ctx.attr.accel)
    args.add("--timeout", ctx.attr.timeout)
    args.add("--image", image[0].path)
    args.add("--loader", ctx.file.loader.path)
    args.add("--ovmf-code", ctx.file.ovmf_code.path)
    args.add("--ovmf-vars", ctx.file.ovmf_vars.path)
    args.add_all(ctx.attr.args)
    ctx.actions.run_shell(
        command = _MAKE_TEMPLATE,
        arguments = [args],
        inputs = image + [ctx.file.loader, ctx.file.ovmf_code, ctx.file.ovmf_vars],
        tools = [ctx.attr.launcher[DefaultInfo].files_to_run],
        outputs = [out],
        # QEMU, swtpm and swtpm_setup come from the host's PATH.
        use_default_shell_env = True,
        execution_requirements = {
            # The snapshot is only good on a host like this one (the
            # restore checks its key): never build it elsewhere or share it
            # through a remote cache.
            "no-remote": "1",
            # The launcher runs swtpm_setup in a PID namespace of its own
            # and QEMU wants /dev/kvm where it is real; the sandbox's own
            # namespaces and device list get in the way of both.
            "no-sandbox": "1",
        },
        resource_set = _template_resources,
        mnemonic = "ClusterTemplate",
        progress_message = "Booting and snapshotting cluster template %{label}",
    )
    return [DefaultInfo(
        files = depset([out]),
        runfiles = ctx.runfiles(files = [out]),
    )]

cluster_template = rule(
    implementation = _cluster_template_impl,
    doc = """A snapshot of a ready cluster, made by a cold launch as a build action.

The output NAME is the snapshot directory (manifest.json and one directory
per node). Its runfile path, REPO/PACKAGE/NAME/manifest.json, is where package
resolve looks for a template (resolve.Template): for //e2e:template that is
qcluster/e2e/template/manifest.json; or set QCLUSTER_TEMPLATE to
$(rlocationpath :NAME).

clustertest restores it only when its key (QEMU, swtpm, OVMF, accelerator,
image, loader, machines, subnet, profile) equals the one of the options a
test asks for, and otherwise uses its template cache: the host's QEMU and
swtpm are not inputs Bazel sees, so a template built before the host's QEMU
was upgraded is ignored, not trusted. Rebuild it with
`bazel build --action_env=QCLUSTER_TEMPLATE_EPOCH=N` or `bazel clean` after
upgrading them.

Its certificates are valid for a year from the build.
""",
    attrs = {
        "accel": attr.string(
            doc = "The accelerator, fixed so that the key is the same on every build: tcg or kvm.",
            default = "tcg",
            values = ["tcg", "kvm"],
        ),
        "args": attr.string_list(
            doc = "More launcher flags (e.g. --memory 1024); they must match what the tests ask for.",
        ),
        "image": attr.label(
            doc = "The OS image (an os_image target).",
            default = Label("//testos:image"),
            allow_files = True,
        ),
        "launcher": attr.label(
            doc = "The cluster command.",
            default = Label("//launch:cluster"),
            executable = True,
            cfg = "exec",
        ),
        "loader": attr.label(
            doc = "The loader of the image.",
            default = Label("//testos:loader.efi"),
            allow_single_file = True,
        ),
        "nodes": attr.int(
            doc = "Nodes in the cluster.",
            default = 3,
        ),
        "ovmf_code": attr.label(
            doc = "OVMF's code image: the one the tests boot (E2E_ENV), or the key differs.",
            default = Label("@debian_ovmf//:code"),
            allow_single_file = True,
        ),
        "ovmf_vars": attr.label(
            doc = "OVMF's variable store template, as ovmf_code.",
            default = Label("@debian_ovmf//:vars"),
            allow_single_file = True,
        ),
        "timeout": attr.string(
            doc = "How long the cold launch may take (a Go duration).",
            default = "10m",
        ),
        "tpm": attr.bool(
            doc = "Give every node a TPM.",
            default = True,
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
