package disk

import (
	"github.com/qcluster/qcluster/imagebuild/osimage"
)

// ImageBlobs returns an OS image's kernel ("kernel.efi") and system payloads
// as Blobs, after checking that the image is for Architecture and has both.
// Verified blobs check every chunk against the image's config as they are
// read, and so are copied through memory; unverified ones open as the raw
// blob files, which can be reflinked (uncompressed layers only; the guest
// verifies the system through dm-verity).
func ImageBlobs(img *osimage.Image, verified bool) (kernel, system Blob, err error) {
	if err := img.RequireArchitecture(Architecture); err != nil {
		return nil, nil, err
	}
	if err := img.RequireOSPayloads(); err != nil {
		return nil, nil, err
	}
	get := img.PayloadUnverified
	if verified {
		get = img.Payload
	}
	k, err := get(osimage.PayloadKernel)
	if err != nil {
		return nil, nil, err
	}
	s, err := get(osimage.PayloadSystem)
	if err != nil {
		return nil, nil, err
	}
	return k, s, nil
}
