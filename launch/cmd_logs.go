package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/qcluster/qcluster/control"
	"github.com/qcluster/qcluster/control/api"
)

func logsCmd(fs *flag.FlagSet) func(context.Context, *env) error {
	out := fs.String("o", "", "where to write the .tar.gz (default: NAME-logs.tar.gz here; - for stdout)")
	return func(ctx context.Context, e *env) error {
		return withCluster(ctx, e, func(c *control.Client, st *api.ClusterStatus) error {
			path := *out
			if path == "" {
				path = st.Name + "-logs.tar.gz"
			}
			if wd := os.Getenv("BUILD_WORKING_DIRECTORY"); wd != "" && path != "-" && !filepath.IsAbs(path) {
				path = filepath.Join(wd, path)
			}
			stream, err := c.Logs(ctx, &api.LogsRequest{})
			if err != nil {
				return err
			}
			copyAll := func(w io.Writer) (int64, error) {
				var n int64
				for {
					d, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						return n, nil
					}
					if err != nil {
						return n, err
					}
					k, err := w.Write(d.Data)
					n += int64(k)
					if err != nil {
						return n, err
					}
				}
			}
			if path == "-" {
				_, err := copyAll(e.stdout)
				return err
			}
			// Written beside the target and renamed: a broken download never
			// looks like a bundle.
			f, err := os.CreateTemp(filepath.Dir(path), ".logs-*.tar.gz")
			if err != nil {
				return fmt.Errorf("write logs: %w", err)
			}
			defer os.Remove(f.Name())
			n, err := copyAll(f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Chmod(f.Name(), 0o644)
			}
			if err == nil {
				err = os.Rename(f.Name(), path)
			}
			if err != nil {
				return fmt.Errorf("logs of %s to %s: %w", st.Name, path, err)
			}
			notice(e, "Logs of %s written to %s (%d KiB)", st.Name, path, (n+1023)/1024)
			return nil
		})
	}
}
