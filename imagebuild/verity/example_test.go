package verity_test

import (
	"bytes"
	"fmt"

	"github.com/qcluster/qcluster/imagebuild/erofs"
	"github.com/qcluster/qcluster/imagebuild/verity"
)

// A system partition: an EROFS image with its hash tree appended, and the
// table line the guest loads through DM_TABLE_LOAD.
func ExampleBuild() {
	var img bytes.Buffer
	if _, err := erofs.Write(&img, []erofs.Entry{
		{Path: "etc/hostname", Mode: 0o644, Data: erofs.Bytes("node0\n")},
	}, erofs.Options{}); err != nil {
		panic(err)
	}
	fsSize := int64(img.Len())
	tab, err := verity.Build(bytes.NewReader(img.Bytes()), fsSize, &img, verity.Params{Salt: []byte("salt")})
	if err != nil {
		panic(err)
	}
	fmt.Println(img.Len() == int(fsSize+verity.TailSize(fsSize)))
	fmt.Println(tab.Line("/dev/vda2"))
	// Output:
	// true
	// 0 16 verity 1 /dev/vda2 /dev/vda2 4096 4096 2 3 sha256 0b3614bf4255163c9ed0e41812435ddd83035b1f5465dff9ee5d88d8f1f39f48 73616c74
}
