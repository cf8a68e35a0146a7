"""The Debian packages Bazel builds use, pinned: the same set and versions as
third_party/fetch.sh put into third_party/cache (see cache/versions.txt).

Each entry was taken from the .deb that fetch.sh downloaded (2026-11-25) and
from apt's index:

    sha256sum third_party/cache/debs/PKG_*.deb     # sha256
    sha1sum   third_party/cache/debs/PKG_*.deb     # sha1 (snapshot.debian.org/file/SHA1)
    apt-cache show PKG=VERSION | grep -E '^(Filename|Size|SHA256):'

apt's SHA256 matched sha256sum for every package. The URLs built from these
entries (third_party/debian.bzl) were not fetched by Bazel here: the machines
qcluster is developed on reach only Debian's mirrors, not snapshot.debian.org.
To move to newer packages, run `make fetch` (`third_party/fetch.sh --refresh`)
and update each entry with the three commands above.
"""

# The snapshot.debian.org timestamp per archive: the last import before
# fetch.sh downloaded the packages, when all of them were current.
SNAPSHOT = {
    "debian": "20261125T120000Z",
    "debian-security": "20261125T120000Z",
}

# The kernel's ABI: its package is linux-image-ABI, its files boot/vmlinuz-ABI
# and lib/modules/ABI.
KERNEL_ABI = "6.1.0-56-cloud-amd64"

# In fetch.sh's order, which is the order of cache/versions.txt.
PACKAGES = [
    struct(
        name = "linux-image-" + KERNEL_ABI,
        version = "6.1.192-2",
        archive = "debian-security",
        filename = "pool/updates/main/l/linux-signed-amd64/linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb",
        size = 26713492,
        sha256 = "e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee",
        sha1 = "b3387d33ab9b1d6ad2aa2d1cf57311affbc1f631",
    ),
    struct(
        name = "systemd-boot-efi",
        version = "252.39-1~deb12u2",
        archive = "debian",
        filename = "pool/main/s/systemd/systemd-boot-efi_252.39-1~deb12u2_amd64.deb",
        size = 113136,
        sha256 = "8f2b81bdcfafc466882a0cae460272dbf10d8d97c6a3c1c6ea33038c155a2f5e",
        sha1 = "d4654e8e612a2fe3a9f912e00c8dcb3af76a5307",
    ),
    struct(
        name = "ovmf",
        version = "2022.11-6+deb12u2",
        archive = "debian",
        filename = "pool/main/e/edk2/ovmf_2022.11-6+deb12u2_all.deb",
        size = 7683456,
        sha256 = "e73d3d1a8799f7f6fc16b73501d913edcdd86237556fbff30693e747e6dc262e",
        sha1 = "ab2784f53e1112077fab43a5f6be2b5d7a43b18a",
    ),
    struct(
        name = "e2fsprogs",
        version = "1.47.0-2+b2",
        archive = "debian",
        filename = "pool/main/e/e2fsprogs/e2fsprogs_1.47.0-2+b2_amd64.deb",
        size = 571920,
        sha256 = "fedd424691c08ef0739729026be298e7be8236337bf8e031b3c7ec66794e6fc2",
        sha1 = "7ebd0e63152e289a79b9a9090590c8a43516e4c2",
    ),
    struct(
        name = "libext2fs2",
        version = "1.47.0-2+b2",
        archive = "debian",
        filename = "pool/main/e/e2fsprogs/libext2fs2_1.47.0-2+b2_amd64.deb",
        size = 204900,
        sha256 = "dff731f2318df99da4b8bf5f330f415f95b94c609bac29e7b2edba0a38f22a98",
        sha1 = "c2a7a82b7d27d27ff8267c5c9d4afd8f5a496208",
    ),
    struct(
        name = "libcom-err2",
        version = "1.47.0-2+b2",
        archive = "debian",
        filename = "pool/main/e/e2fsprogs/libcom-err2_1.47.0-2+b2_amd64.deb",
        size = 20044,
        sha256 = "a2bac7015e78fbc0c504df3e441f3a22292f1d2d77f9ccda760057f3690e22f2",
        sha1 = "75fc02543e18c7ab117b74d13bd379ab73c42c97",
    ),
    struct(
        name = "libblkid1",
        version = "2.38.1-5+deb12u3",
        archive = "debian",
        filename = "pool/main/u/util-linux/libblkid1_2.38.1-5+deb12u3_amd64.deb",
        size = 147380,
        sha256 = "5a083377f29191cafcdf0f91ec124349b4a7895b531556633a136e43c6d53943",
        sha1 = "0048c8356d00a5505589595ad5e6d28b0388136b",
    ),
    struct(
        name = "libuuid1",
        version = "2.38.1-5+deb12u3",
        archive = "debian",
        filename = "pool/main/u/util-linux/libuuid1_2.38.1-5+deb12u3_amd64.deb",
        size = 28784,
        sha256 = "5fff398321da62d28a842bcbabd193d72ae21724962c029dc32b1dc6b2deaeaf",
        sha1 = "cc0777e2801bbdaf73751f122c8817525fe1ca42",
    ),
    struct(
        name = "libc6",
        version = "2.36-9+deb12u14",
        archive = "debian",
        filename = "pool/main/g/glibc/libc6_2.36-9+deb12u14_amd64.deb",
        size = 2759320,
        sha256 = "ba4f88f73dbc3ae9055f3c20f4523bfdbaf1ad13ff95e258924f77d20b4fbedf",
        sha1 = "c534c6c7f912b61ca26b7cf4082235a0343b8751",
    ),
]
