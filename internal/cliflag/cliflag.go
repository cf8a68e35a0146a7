// Package cliflag is how qcluster's commands read their flags: a mistake is
// one line that points at --help, and --help prints the usage text followed
// by every flag with its default.
package cliflag

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// Parse parses args, which must hold flags only, into fs (ContinueOnError;
// Parse discards what the flag package itself would print). For --help it
// writes usage and the flags' defaults to w and returns flag.ErrHelp, which
// callers treat as success.
func Parse(fs *flag.FlagSet, args []string, w io.Writer, usage string) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(w, usage)
		fs.SetOutput(w)
		fs.PrintDefaults()
		return err
	case err != nil:
		return fmt.Errorf("%w (see --help)", err)
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	return nil
}
