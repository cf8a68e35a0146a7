package cliflag

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string // "" for none
		wantOut []string
	}{
		{args: []string{"--n", "3"}},
		{args: []string{"--help"}, wantErr: flag.ErrHelp.Error(), wantOut: []string{"usage: x\n", "-n int", "a number (default 1)"}},
		{args: []string{"--m"}, wantErr: "flag provided but not defined: -m (see --help)"},
		{args: []string{"--n", "3", "extra"}, wantErr: `unexpected argument "extra" (see --help)`},
	} {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		n := fs.Int("n", 1, "a number")
		var out bytes.Buffer
		err := Parse(fs, tc.args, &out, "usage: x\n")
		switch {
		case tc.wantErr == "" && (err != nil || *n != 3):
			t.Errorf("%q: n %d, %v", tc.args, *n, err)
		case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr):
			t.Errorf("%q: %v, want %q", tc.args, err, tc.wantErr)
		}
		if tc.wantErr == flag.ErrHelp.Error() && !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%q: %v does not wrap flag.ErrHelp", tc.args, err)
		}
		for _, s := range tc.wantOut {
			if !strings.Contains(out.String(), s) {
				t.Errorf("%q: output %q lacks %q", tc.args, out.String(), s)
			}
		}
		if len(tc.wantOut) == 0 && out.Len() > 0 {
			t.Errorf("%q: printed %q", tc.args, out.String())
		}
	}
}
