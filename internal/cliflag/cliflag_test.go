package cliflag

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

// parse runs Parse on a flag set with one flag, -n (default 1), and returns
// -n, what Parse printed and its error.
func parse(args ...string) (int, string, error) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	n := fs.Int("n", 1, "a number")
	var out bytes.Buffer
	err := Parse(fs, args, &out, "usage: x\n")
	return *n, out.String(), err
}

func TestParse(t *testing.T) {
	if n, out, err := parse("--n", "3"); n != 3 || out != "" || err != nil {
		t.Errorf("--n 3: n %d, printed %q, %v", n, out, err)
	}
	_, out, err := parse("--help")
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v, want flag.ErrHelp", err)
	}
	for _, s := range []string{"usage: x\n", "-n int", "a number (default 1)"} {
		if !strings.Contains(out, s) {
			t.Errorf("--help printed %q, which lacks %q", out, s)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--m"}, "flag provided but not defined: -m (see --help)"},
		{[]string{"--n", "3", "extra"}, `unexpected argument "extra" (see --help)`},
	} {
		if _, out, err := parse(c.args...); err == nil || err.Error() != c.want || out != "" {
			t.Errorf("%q: %v, printed %q; want %q and nothing printed", c.args, err, out, c.want)
		}
	}
}
